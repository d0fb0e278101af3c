<?php
// Rewrites a site's URLs in a copy of its database (a restore's staging
// copy), safely for PHP-serialized values: WordPress stores options, widgets
// and post meta as serialize()d arrays whose strings carry their byte
// length, so a plain text replace corrupts them. Each value that holds the
// old hostname is unserialized, its strings are replaced, and it is
// serialized again (nested serialized strings too). Objects other than
// stdClass are never instantiated (allowed_classes) and are left as they are.
//
// Runs inside the site's PHP container as www-data, with the site's own
// database account (granted the staging database for the time of the
// rewrite). Input in the environment: WPFLEET_DB, WPFLEET_PAIRS (JSON
// {"from": "to"}); output: a line WPFLEET-RESULT {json counts}.
mysqli_report(MYSQLI_REPORT_ERROR | MYSQLI_REPORT_STRICT);

function wpfleet_rewrite($value, array $pairs, int $depth = 0)
{
    if ($depth > 32) {
        return $value;
    }
    if (is_string($value)) {
        if (preg_match('/^(a:\d+:\{|O:\d+:"|s:\d+:"|i:-?\d+;|d:[-0-9.eE]+;|b:[01];|N;)/', $value)) {
            $inner = @unserialize($value, ['allowed_classes' => ['stdClass']]);
            // Only a value that is exactly a serialization (unserialize ignores
            // trailing text: "b:1; see https://old/" is text, not a boolean).
            if (($inner !== false || $value === 'b:0;') && serialize($inner) === $value) {
                return serialize(wpfleet_rewrite($inner, $pairs, $depth + 1));
            }
        }
        return strtr($value, $pairs);
    }
    if (is_array($value)) {
        $out = [];
        foreach ($value as $key => $item) {
            $out[is_string($key) ? strtr($key, $pairs) : $key] = wpfleet_rewrite($item, $pairs, $depth + 1);
        }
        return $out;
    }
    if ($value instanceof stdClass) {
        foreach (get_object_vars($value) as $key => $item) {
            $value->$key = wpfleet_rewrite($item, $pairs, $depth + 1);
        }
    }
    return $value;
}

$pairs = json_decode(getenv('WPFLEET_PAIRS'), true);
$database = getenv('WPFLEET_DB');
if (!is_array($pairs) || !$pairs || !$database) {
    fwrite(STDERR, "WPFLEET_PAIRS and WPFLEET_DB are required\n");
    exit(2);
}
$host = getenv('WORDPRESS_DB_HOST');
$port = 3306;
if (strpos($host, ':') !== false) {
    [$host, $port] = explode(':', $host, 2);
}
$password = trim(file_get_contents(getenv('WORDPRESS_DB_PASSWORD_FILE')));
$db = new mysqli($host, getenv('WORDPRESS_DB_USER'), $password, $database, (int) $port);
$db->set_charset('utf8mb4');

$needles = array_keys($pairs);
$changed = 0;
$tables = 0;
foreach ($db->query('SHOW FULL TABLES WHERE Table_type = "BASE TABLE"')->fetch_all() as [$table]) {
    $tables++;
    $quoted = '`' . str_replace('`', '``', $table) . '`';
    $keys = [];
    $texts = [];
    foreach ($db->query("SHOW COLUMNS FROM $quoted")->fetch_all(MYSQLI_ASSOC) as $column) {
        if ($column['Key'] === 'PRI') {
            $keys[] = $column['Field'];
        }
        if (preg_match('/char|text|json|enum|set/i', $column['Type'])) {
            $texts[] = $column['Field'];
        }
    }
    if (!$keys || !$texts) {
        continue; // without a primary key no row can be named for its update
    }
    $keyList = implode(', ', array_map(fn ($k) => '`' . str_replace('`', '``', $k) . '`', $keys));
    foreach ($texts as $column) {
        $col = '`' . str_replace('`', '``', $column) . '`';
        $like = [];
        foreach ($needles as $needle) {
            $like[] = "$col LIKE '%" . $db->real_escape_string(addcslashes($needle, '%_\\')) . "%'";
        }
        $rows = $db->query("SELECT $keyList, $col FROM $quoted WHERE " . implode(' OR ', $like));
        $where = implode(' AND ', array_map(fn ($k) => '`' . str_replace('`', '``', $k) . '` = ?', $keys));
        $update = $db->prepare("UPDATE $quoted SET $col = ? WHERE $where");
        while ($row = $rows->fetch_row()) {
            $old = array_pop($row);
            $new = wpfleet_rewrite($old, $pairs);
            if ($new !== $old) {
                $params = array_merge([$new], $row);
                $update->bind_param(str_repeat('s', count($params)), ...$params);
                $update->execute();
                $changed++;
            }
        }
    }
}
echo "\nWPFLEET-RESULT " . json_encode(['tables' => $tables, 'changed' => $changed]) . "\n";
