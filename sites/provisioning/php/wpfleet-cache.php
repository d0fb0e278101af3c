<?php
/*
 * Plugin Name: wpfleet page cache
 * Description: Purges the hosting's page cache when content changes: the pages a change shows on, or every page when in doubt. Installed and rewritten by wpfleet: edits are lost.
 */

/*
 * nginx keeps each cached page in one file of WPFLEET_PAGE_CACHE_DIR named
 * md5(<scheme><method><host><path><"gzip" or "">) (sites/provisioning/templates.py): a
 * page is purged by deleting that file, the whole site by deleting them all.
 * Only paths without a query string are ever cached. Purges are collected
 * during the request and done once, before the response ends, so the next
 * visitor after a save gets the new page.
 */
if (!defined('WPFLEET_PAGE_CACHE_DIR')) {
    define('WPFLEET_PAGE_CACHE_DIR', '/var/cache/wpfleet/pages');
}
// Every hostname the site answers to, one a line (written by the panel):
// each keys its own copy of a page.
if (!defined('WPFLEET_PAGE_CACHE_HOSTS')) {
    define('WPFLEET_PAGE_CACHE_HOSTS', '/var/cache/wpfleet/hosts');
}

final class Wpfleet_Page_Cache
{
    /** @var array<string, true> */
    private static $urls = [];
    /** @var array<int, true> posts whose pages are resolved when the request ends (terms are set after the status) */
    private static $posts = [];
    private static $everything = false;
    private static $registered = false;
    private static $purging = false;

    public static function everything()
    {
        self::$everything = true;
        self::register();
    }

    public static function url($url)
    {
        if (is_string($url) && $url !== '') {
            self::$urls[$url] = true;
            self::register();
        }
    }

    /** A listing and its next pages, as many as its posts fill (at most 100). */
    public static function listing($url, $count)
    {
        self::url($url);
        $per_page = max(1, (int) get_option('posts_per_page'));
        $pages = min(100, (int) ceil(max(0, (int) $count) / $per_page));
        for ($page = 2; $page <= $pages; $page++) {
            self::url(trailingslashit($url) . 'page/' . $page . '/');
        }
    }

    /** Every page a published post shows on, as it is when the request ends. */
    public static function post($post)
    {
        $post = get_post($post);
        if ($post) {
            self::$posts[(int) $post->ID] = true;
            self::register();
        }
    }

    /** Post types whose content shows on pages without being a page: the site editor's. */
    public static function shown_everywhere($type)
    {
        return in_array($type, ['wp_navigation', 'wp_template', 'wp_template_part', 'wp_global_styles', 'wp_block'], true);
    }

    private static function post_urls($post)
    {
        $post = get_post($post);
        if (!$post || wp_is_post_revision($post) || !is_post_type_viewable($post->post_type)) {
            return;
        }
        self::url(get_permalink($post));
        $published = (int) wp_count_posts($post->post_type)->publish;
        self::listing(home_url('/'), $published);
        $posts_page = (int) get_option('page_for_posts');
        if ($posts_page) {
            self::listing(get_permalink($posts_page), $published);
        }
        $archive = get_post_type_archive_link($post->post_type);
        if ($archive) {
            self::listing($archive, $published);
        }
        self::url(get_author_posts_url((int) $post->post_author));
        foreach (get_object_taxonomies($post->post_type) as $taxonomy) {
            $terms = get_the_terms($post, $taxonomy);
            foreach (is_array($terms) ? $terms : [] as $term) {
                $link = get_term_link($term);
                if (!is_wp_error($link)) {
                    self::listing($link, $term->count);
                }
            }
        }
        self::url(get_feed_link());
        self::url(get_feed_link('comments_' . get_default_feed()));
        self::url(get_post_comments_feed_link($post->ID));
    }

    private static function register()
    {
        if (self::$purging) {
            return; // collected by the purge that is running
        }
        if (doing_action('shutdown') || did_action('shutdown')) {
            self::purge(); // a change made while the request ends: now, the hook has run
        } elseif (!self::$registered) {
            self::$registered = true;
            add_action('shutdown', [self::class, 'purge'], 0);
        }
    }

    /** The paths of a URL under every hostname of the site. */
    private static function hosts($url_host)
    {
        static $listed = null;
        if ($listed === null) {
            $listed = @file(WPFLEET_PAGE_CACHE_HOSTS, FILE_IGNORE_NEW_LINES | FILE_SKIP_EMPTY_LINES);
        }
        $hosts = [strtolower($url_host) => true];
        foreach (is_array($listed) ? $listed : [] as $host) {
            $hosts[strtolower(trim($host))] = true;
        }
        return array_keys($hosts);
    }

    public static function purge()
    {
        self::$registered = false;
        $dir = WPFLEET_PAGE_CACHE_DIR;
        if (!is_dir($dir)) {
            self::$urls = self::$posts = [];
            self::$everything = false;
            return;
        }
        self::$purging = true;
        $posts = array_keys(self::$posts);
        self::$posts = [];
        foreach ($posts as $post_id) {
            self::post_urls($post_id);
        }
        self::$purging = false;
        if (self::$everything) {
            foreach ((array) scandir($dir) as $file) {
                // Only cache entries: nginx's temporary files have other names.
                if (preg_match('/^[0-9a-f]{32}$/', (string) $file)) {
                    @unlink("$dir/$file");
                }
            }
        } else {
            foreach (array_keys(self::$urls) as $url) {
                $parts = wp_parse_url($url);
                if (!is_array($parts) || empty($parts['host']) || isset($parts['query'])) {
                    continue;
                }
                $path = isset($parts['path']) && $parts['path'] !== '' ? $parts['path'] : '/';
                // WordPress writes %xx in lowercase; a browser may ask with uppercase.
                $paths = array_unique([$path, preg_replace_callback('/%[0-9a-f]{2}/', function ($m) {
                    return strtoupper($m[0]);
                }, $path)]);
                foreach (self::hosts($parts['host']) as $host) {
                    foreach ($paths as $one) {
                        foreach (['GET', 'HEAD'] as $method) {
                            foreach (['', 'gzip'] as $encoding) { // the page as sent with and without gzip
                                @unlink($dir . '/' . md5('https' . $method . $host . $one . $encoding));
                            }
                        }
                    }
                }
            }
        }
        self::$urls = [];
        self::$everything = false;
    }
}

// Posts: published, updated, unpublished, trashed or deleted.
add_action('transition_post_status', function ($new, $old, $post) {
    if ($new !== 'publish' && $old !== 'publish') {
        return;
    }
    if (Wpfleet_Page_Cache::shown_everywhere($post->post_type)) {
        Wpfleet_Page_Cache::everything(); // a menu, template, style or synced pattern of the site editor
    } elseif (!is_post_type_viewable($post->post_type)) {
        return; // oEmbed caches, changesets and the like: no page of their own
    } elseif ($new !== $old) {
        Wpfleet_Page_Cache::everything(); // published or unpublished: every listing's pages shift
    } else {
        Wpfleet_Page_Cache::post($post);
    }
}, 10, 3);
// A published post's address or terms changed: its old page and old listings too.
add_action('post_updated', function ($post_id, $after, $before) {
    if ($before->post_status === 'publish' && $before->post_name !== $after->post_name) {
        Wpfleet_Page_Cache::everything();
    }
}, 10, 3);
add_action('set_object_terms', function ($object_id, $terms, $tt_ids, $taxonomy, $append, $old_tt_ids) {
    $tt_ids = array_map('intval', (array) $tt_ids);
    $old_tt_ids = array_map('intval', (array) $old_tt_ids);
    sort($tt_ids);
    sort($old_tt_ids);
    if ($tt_ids !== $old_tt_ids && get_post_status($object_id) === 'publish') {
        Wpfleet_Page_Cache::everything();
    }
}, 10, 6);
add_action('before_delete_post', function ($post_id) {
    if (get_post_status($post_id) === 'publish') {
        Wpfleet_Page_Cache::everything();
    }
});

// Comments: shown on their post once approved.
$wpfleet_comment = function ($comment_id) {
    $comment = get_comment($comment_id);
    if ($comment && $comment->comment_post_ID) {
        Wpfleet_Page_Cache::post((int) $comment->comment_post_ID);
    }
};
add_action('wp_insert_comment', function ($comment_id, $comment) use ($wpfleet_comment) {
    if ((string) $comment->comment_approved === '1') {
        $wpfleet_comment($comment_id);
    }
}, 10, 2);
add_action('wp_set_comment_status', $wpfleet_comment);
add_action('edit_comment', $wpfleet_comment);
add_action('deleted_comment', $wpfleet_comment);

// Anything that shows on every page: purge them all.
foreach ([
    'switch_theme', 'customize_save_after', 'wp_update_nav_menu', 'wp_delete_nav_menu',
    'activated_plugin', 'deactivated_plugin', 'upgrader_process_complete',
    'edited_term', 'delete_term', 'deleted_user', 'update_option_sidebars_widgets',
] as $wpfleet_hook) {
    add_action($wpfleet_hook, ['Wpfleet_Page_Cache', 'everything']);
}
// An author's name shows on their posts: only an author's profile matters.
add_action('profile_update', function ($user_id) {
    if (count_user_posts($user_id) > 0) {
        Wpfleet_Page_Cache::everything();
    }
});
$wpfleet_option = function ($option) {
    static $shown = [
        'blogname', 'blogdescription', 'home', 'siteurl', 'permalink_structure', 'show_on_front', 'page_on_front',
        'page_for_posts', 'posts_per_page', 'date_format', 'time_format', 'stylesheet', 'template',
        'site_icon', 'site_logo', 'WPLANG', 'blog_public', 'category_base', 'tag_base', 'timezone_string',
        'gmt_offset', 'sticky_posts', 'posts_per_rss', 'thread_comments', 'comments_per_page', 'default_comments_page',
        'comment_order', 'page_comments', 'show_avatars',
    ];
    if (in_array($option, $shown, true) || strpos($option, 'widget_') === 0 || strpos($option, 'theme_mods_') === 0) {
        Wpfleet_Page_Cache::everything();
    }
};
add_action('updated_option', $wpfleet_option);
add_action('added_option', $wpfleet_option);

// A visitor's own page is never stored, whatever cookie names nginx was shown:
// logged in (WordPress sends no-cache headers too), or holding a post's password.
add_action('send_headers', function () {
    if (is_user_logged_in() || !empty($_COOKIE['wp-postpass_' . COOKIEHASH])) {
        header('X-Accel-Expires: 0');
        header('Cache-Control: no-cache, must-revalidate, max-age=0, no-store, private');
    }
});
unset($wpfleet_hook, $wpfleet_comment, $wpfleet_option);
