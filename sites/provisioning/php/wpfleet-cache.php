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

final class Wpfleet_Page_Cache
{
    /** @var array<string, true> */
    private static $urls = [];
    private static $everything = false;
    private static $registered = false;

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

    /** Every page a published post shows on. */
    public static function post($post)
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
        if (!self::$registered) {
            self::$registered = true;
            add_action('shutdown', [self::class, 'purge'], 0);
        }
    }

    public static function purge()
    {
        $dir = WPFLEET_PAGE_CACHE_DIR;
        if (!is_dir($dir)) {
            return;
        }
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
                foreach (['GET', 'HEAD'] as $method) {
                    foreach (['', 'gzip'] as $encoding) { // the page as sent to clients with and without gzip
                        @unlink($dir . '/' . md5('https' . $method . strtolower($parts['host']) . $path . $encoding));
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
    if ($new === 'publish' && $old !== 'publish') {
        Wpfleet_Page_Cache::everything(); // every listing's pages shift by one
    } elseif ($new === 'publish' || $old === 'publish') {
        Wpfleet_Page_Cache::post($post);
        if ($new !== 'publish') {
            Wpfleet_Page_Cache::everything();
        }
    }
}, 10, 3);
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
    'edited_term', 'delete_term', 'profile_update', 'update_option_sidebars_widgets',
] as $wpfleet_hook) {
    add_action($wpfleet_hook, ['Wpfleet_Page_Cache', 'everything']);
}
add_action('updated_option', function ($option) {
    static $shown = [
        'blogname', 'blogdescription', 'home', 'siteurl', 'permalink_structure', 'show_on_front', 'page_on_front',
        'page_for_posts', 'posts_per_page', 'date_format', 'time_format', 'stylesheet', 'template',
        'site_icon', 'WPLANG', 'blog_public', 'category_base', 'tag_base',
    ];
    if (in_array($option, $shown, true) || strpos($option, 'widget_') === 0 || strpos($option, 'theme_mods_') === 0) {
        Wpfleet_Page_Cache::everything();
    }
});

// A visitor's own page is never stored, whatever cookie names nginx was shown:
// logged in (WordPress sends no-cache headers too), or holding a post's password.
add_action('send_headers', function () {
    if (is_user_logged_in() || !empty($_COOKIE['wp-postpass_' . COOKIEHASH])) {
        header('X-Accel-Expires: 0');
        header('Cache-Control: no-cache, must-revalidate, max-age=0, no-store, private');
    }
});
unset($wpfleet_hook, $wpfleet_comment);
