"""Changing a live site's PHP (its version or its php.ini) blue/green, with no failed request.

1. ``php_<name>-next`` is made beside the serving ``php_<name>``, with the
   new image and php.ini, on the site's files and in nginx's network
   namespace, its PHP-FPM on the other loopback port (FPM_PORTS); it must
   answer a real FastCGI request for the site's home page (``check_answers``).
2. nginx is given a server block passing to that port, and reloaded; the
   reload returns once the old workers have finished (RELOAD_AND_WAIT), so
   no request is still on its way to the old container.
3. The old container is stopped gracefully (php-fpm finishes the requests
   a shutting-down nginx worker may still wait for) and removed, and the
   new one renamed ``php_<name>`` (its port, on its label, stays: nginx's
   server block is already the one it should have).

A failed attempt goes back (``roll_back``: nginx to the old container and
the next one removed, or, once the old one is gone, a switch back, blue/green
again). A run after a crash finds where the last one stopped: a next
container that serves (nginx passes to it, or the old one is stopped or
gone) is promoted, never built again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sites.infra.errors import InfraError
from sites.provisioning.steps import Context, NginxConfigStep, PhpStep, fpm_port, wait_until_ready
from sites.provisioning.templates import FPM_PORTS, php_ini

# A FastCGI GET of the site's home page, sent by the new container's PHP to
# its own php-fpm (no FastCGI client in the images). The answer's status
# decides: WordPress ran under the new PHP and the site's database.
FASTCGI_CHECK = r"""
function rec($type, $body) {
    $n = strlen($body);
    return chr(1) . chr($type) . chr(0) . chr(1) . chr($n >> 8) . chr($n & 255) . chr(0) . chr(0) . $body;
}
function pair($k, $v) {
    $len = function ($s) { $n = strlen($s); return $n < 128 ? chr($n) : pack('N', $n | 0x80000000); };
    return $len($k) . $len($v) . $k . $v;
}
$host = getenv('WPFLEET_HOST');
$params = ['SCRIPT_FILENAME' => '/var/www/html/index.php', 'SCRIPT_NAME' => '/index.php',
    'REQUEST_METHOD' => 'GET', 'REQUEST_URI' => '/', 'QUERY_STRING' => '', 'DOCUMENT_ROOT' => '/var/www/html',
    'SERVER_PROTOCOL' => 'HTTP/1.1', 'HTTPS' => 'on', 'HTTP_HOST' => $host, 'SERVER_NAME' => $host,
    'SERVER_PORT' => '443', 'REMOTE_ADDR' => '127.0.0.1', 'GATEWAY_INTERFACE' => 'CGI/1.1'];
$body = '';
foreach ($params as $k => $v) { $body .= pair($k, $v); }
$port = (int) getenv('WPFLEET_PORT');
$socket = @fsockopen('127.0.0.1', $port, $errno, $errstr, 5);
if (!$socket) { echo "WPFLEET-CHECK no answer on $port: $errstr\n"; exit(2); }
stream_set_timeout($socket, 20);
fwrite($socket, rec(1, "\0\1\0\0\0\0\0\0") . rec(4, $body) . rec(4, '') . rec(5, ''));
$out = '';
while (true) {
    $head = fread($socket, 8);
    if ($head === false || strlen($head) < 8) { break; }
    $type = ord($head[1]);
    $length = (ord($head[4]) << 8) | ord($head[5]);
    $content = $length ? stream_get_contents($socket, $length) : '';
    if (ord($head[6])) { fread($socket, ord($head[6])); }
    if ($type === 6) { $out .= $content; }
    if ($type === 3) { break; }
}
$headers = strstr($out, "\r\n\r\n", true);
$status = preg_match('/^Status: (\d{3})/mi', (string) $headers, $m) ? (int) $m[1] : ($out === '' ? 0 : 200);
echo "WPFLEET-CHECK $status\n";
exit($status >= 200 && $status < 400 ? 0 : 1);
"""

Recorder = Callable[..., object]

# Waits (at most $1 times 50 ms) until no nginx worker from before the last
# reload is left ("shutting down": it finishes the requests on connections
# it still has). sh and /proc only, as RELOAD_AND_WAIT.
DRAIN_OLD_WORKERS = r"""
tries=0
while [ $tries -lt "$1" ]; do
    old=0
    for dir in /proc/[0-9]*; do
        case "$(tr '\0' ' ' < "$dir/cmdline" 2>/dev/null)" in
            "nginx: worker process is shutting down"*) old=1 ;;
        esac
    done
    [ $old -eq 0 ] && exit 0
    tries=$((tries + 1))
    sleep 0.05
done
exit 1
"""


def check_answers(ctx: Context, container: str, timeout: float = 30) -> None:
    """Raise unless ``container``'s php-fpm answers the site's home page (2xx or 3xx)."""
    docker = ctx.infra.docker
    deadline = time.monotonic() + timeout
    if not wait_until_ready(docker, container, timeout):
        raise InfraError("php", f"{container} did not start php-fpm within {timeout:g}s")
    port = str(fpm_port(docker.container(container)))
    last = ""
    while True:
        code, output = docker.exec(
            container,
            ["php", "-r", FASTCGI_CHECK],
            user="www-data",
            environment={"WPFLEET_HOST": ctx.home_host, "WPFLEET_PORT": port},
        )
        if code == 0:
            return
        last = next((line for line in output.splitlines() if line.startswith("WPFLEET-CHECK")), output[-200:])
        if time.monotonic() >= deadline:
            raise InfraError("php", f"{container} does not serve the site: {last}")
        time.sleep(0.2)


def switch_php(ctx: Context, previous: Context, record: Recorder) -> None:
    """Serve the site from a PHP-FPM container made for ``ctx``; ``previous`` is what serves now."""
    n = ctx.names
    docker = ctx.infra.docker
    current, nxt = docker.container(n.php), docker.container(n.php_next)
    if nxt is not None and (current is None or current.status != "running" or _passes_to(ctx, fpm_port(nxt))):
        # An earlier attempt got as far as serving from the next one (nginx
        # passes to it, or the old one is stopped or gone): finish that.
        _promote(ctx, previous, record)
        return
    if current is None:
        raise InfraError("php", f"container {n.php} is missing: the site must be repaired first")

    handle = record("php_next", "apply", "RUNNING", "")
    try:
        # A next one left by a run that died before it served is made again.
        docker.remove_container(n.php_next, n.labels("php"))
        # The port the serving one does not listen on (both share nginx's network namespace).
        port = next(p for p in FPM_PORTS if p != fpm_port(current))
        PhpStep.create(ctx, n.php_next, port)
        check_answers(ctx, n.php_next)
        record("php_next", "apply", "OK", f"{n.php_next} answers on port {port} ({ctx.php_image})", handle=handle)
        handle = record("nginx_config", "apply", "RUNNING", "")
        NginxConfigStep().apply(ctx, php_port=port)
        record("nginx_config", "apply", "OK", f"passes to {n.php_next} (127.0.0.1:{port})", handle=handle)
    except Exception as error:
        record("php_next", "apply", "FAILED", str(error), handle=handle)
        raise
    _promote(ctx, previous, record)


def _passes_to(ctx: Context, port: int) -> bool:
    block = ctx.infra.docker.read_file(ctx.names.nginx, ctx.names.nginx_config) or ""
    return f"fastcgi_pass 127.0.0.1:{port};" in block


def _longest_request(*contexts: Context) -> int:
    return max(int(c.php_values.get("max_execution_time", 60)) for c in contexts)


def _promote(ctx: Context, previous: Context, record: Recorder) -> None:
    """The next container serves: the old one goes, the next one takes the site's PHP name."""
    n = ctx.names
    docker = ctx.infra.docker
    handle = record("php", "apply", "RUNNING", "")
    try:
        old = docker.container(n.php)
        if old is not None and old.labels.get("wpfleet.site") == n.site:
            # nginx's reload returned once its old workers were shutting down;
            # such a worker still serves a request that arrives on a
            # connection it kept open (Caddy's), with the old server block:
            # to the old PHP. Wait until they are gone, for as long as a
            # request may run (under the old limit or the new); then its stop
            # signal (SIGQUIT) lets php-fpm finish what it has before it goes.
            seconds = _longest_request(ctx, previous) + 5
            docker.exec(n.nginx, ["sh", "-c", DRAIN_OLD_WORKERS, "sh", str(seconds * 20)])
            docker.stop(old, timeout=seconds)
        note = docker.remove_container(n.php, n.labels("php"))
        if note:
            raise InfraError("php", note)
        nxt = docker.container(n.php_next)
        if nxt is None:
            raise InfraError("php", f"container {n.php_next} is missing")
        docker.rename(nxt, n.php)
    except Exception as error:
        record("php", "apply", "FAILED", str(error), handle=handle)
        raise
    record("php", "apply", "OK", f"{n.php} runs {ctx.php_image}", handle=handle)


def runs_as(ctx: Context, container: Any) -> bool:
    """Whether a PHP container runs the context's image and php.ini."""
    if container.attrs.get("Config", {}).get("Image") != ctx.php_image:
        return False
    ini = ctx.infra.docker.read_file(container, "/usr/local/etc/php/conf.d/zz-wpfleet.ini")
    return ini == php_ini(values=ctx.php_values)


def roll_back(previous: Context, wanted: Context, record: Recorder) -> None:
    """Serve the site from a PHP container as ``previous`` says again, wherever the switch to ``wanted`` stopped.

    - the old container serves or can (nginx passes to it, or it only
      needs starting): nginx to it, the next one removed;
    - the old one is gone, or the next one already took its name: a switch
      back, blue/green again (the site serves throughout).
    Recorded; never raises (the job's own error is the one to report).
    """
    n = previous.names
    docker = previous.infra.docker
    handle = record("php_next", "undo", "RUNNING", "")
    try:
        current, nxt = docker.container(n.php), docker.container(n.php_next)
        if current is not None and runs_as(previous, current):
            if current.status != "running":
                # (In its nginx's network namespace: nginx runs first, after an engine's crash too.)
                PhpStep.running_nginx(previous, n.php)
                docker.start(current)
                check_answers(previous, n.php)
            NginxConfigStep().apply(previous)
            previous.note(docker.remove_container(n.php_next, n.labels("php")))
        elif current is None and nxt is None:
            raise InfraError("php", f"neither {n.php} nor {n.php_next} exists: the site must be repaired")
        else:
            if current is None:
                # The old one was removed before the rename: the next one takes the name first.
                _promote(wanted, previous, record)
            switch_php(previous, wanted, record)
    except Exception as error:
        record("php_next", "undo", "UNDO_FAILED", str(error), handle=handle)
        return
    record("php_next", "undo", "UNDONE", f"{n.php} runs {previous.php_image}", handle=handle)
