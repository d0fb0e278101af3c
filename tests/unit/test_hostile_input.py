"""Hostile input at the API: every bad request is refused with a JSON 4xx and leaves no trace.

"No trace" means no Site row, no Job row and no task in the django-q queue
(the OrmQ table), checked after every request. The queue row is written by an
on-commit hook, so each request runs with on-commit callbacks executed, as
they are after a real commit; the control test at the top shows that a good
name does leave all three rows, so the absence checks below can fail.
"""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest
from django.conf import settings
from django.core.cache import cache
from django_q.models import OrmQ
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient
from rest_framework.throttling import SimpleRateThrottle

from jobs.models import Job
from sites.models import Site
from sites.models.validation import NAME_RULE
from tests.conftest import user_in_group

pytestmark = pytest.mark.django_db

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"

# How many hostile requests this module sent; reported when the module ends.
tried = 0


@pytest.fixture(scope="module", autouse=True)
def report_how_many_bad_inputs_were_tried(request):
    yield
    # Captured output is hidden for passing tests; this line is meant to be seen.
    with request.config.pluginmanager.get_plugin("capturemanager").global_and_fixture_disabled():
        print(f"\nbad inputs tried: {tried}")


@pytest.fixture(autouse=True)
def fresh_throttle_counts():
    # The throttle counts requests per user in the cache, which outlives the
    # test database (and user ids repeat after a rollback): start from zero.
    cache.clear()


@pytest.fixture
def staff_user(db):
    # The shared fixture hashes a password (a quarter of a second each);
    # these tests authenticate by token only, and there are hundreds of them.
    return user_in_group("operator", "Site operators")


@pytest.fixture
def send(api, django_capture_on_commit_callbacks):
    """Send one request with on-commit hooks run, as a committed request would run them."""

    def _send(method: str, path: str, body: bytes | str | None = None, content_type: str = JSON):
        with django_capture_on_commit_callbacks(execute=True):
            if body is None:
                return api.generic(method, path)
            return api.generic(method, path, body, content_type=content_type)

    return _send


def assert_refused(response, *statuses: int) -> dict:
    """A clear JSON error with one of the expected statuses, and nothing written."""
    global tried
    tried += 1
    assert response.status_code in (statuses or range(400, 500)), (response.status_code, response.content[:300])
    assert response["Content-Type"].split(";")[0] == "application/json", response["Content-Type"]
    body = json.loads(response.content)
    assert isinstance(body, dict), body
    assert isinstance(body.get("detail"), str) and body["detail"].strip(), body
    assert isinstance(body.get("code"), str) and body["code"], body
    assert not Site.objects.exists(), "a Site row was written"
    assert not Job.objects.exists(), "a Job row was written"
    assert not OrmQ.objects.exists(), "a task was queued"
    return body


def test_control_a_good_name_does_leave_a_site_a_job_and_a_queued_task(send):
    response = send("POST", "/api/sites", json.dumps({"site": "control1"}))
    assert response.status_code == 202
    assert Site.objects.count() == Job.objects.count() == OrmQ.objects.count() == 1


# --- names that are strings but not site names --------------------------------

BAD_NAMES = {
    # case and punctuation
    "upper case": "MySite",
    "all upper": "MYSITE",
    "hyphen": "my-site",
    "leading hyphen": "-site",
    "underscore": "my_site",
    "dot": "my.site",
    "subdomain": "a.b.c",
    "punycode": "xn--80ak6aa92e",
    "space": "my site",
    "leading space": " mysite",
    "trailing space": "mysite ",
    "tab": "\tmysite",
    # look-alikes that a human reads as a good name
    "cyrillic a": "\u0430dmin1",
    "cyrillic e": "mysit\u0435",
    "fullwidth letters": "\uff4d\uff59\uff53\uff49\uff54\uff45",
    "fullwidth digit": "site\uff11",
    "combining acute": "site\u0301",
    "precomposed accent": "sit\u00e9",
    "zero-width space": "my\u200bsite",
    "right-to-left override": "\u202emysite",
    "ligature fi": "\ufb01le",
    "kelvin sign": "\u212aelvin",
    "dotless i": "s\u0131te",
    "superscript two": "site\u00b2",
    "arabic-indic digit": "site\u0663",
    "sharp s": "stra\u00dfe",
    # length
    "empty": "",
    "33 characters": "a" * 33,
    "4096 characters": "a" * 4096,
    # SQL metacharacters
    "sql drop": "'; DROP DATABASE x; --",
    "sql tautology": "a' OR '1'='1",
    "sql comment": "a/*x*/",
    "like percent": "%",
    "like underscore": "_",
    "grant wildcard": "wp_%",
    "percent inside": "a%b",
    "backslash": "a\\b",
    "backticks": "`x`",
    "semicolon": "a;b",
    # shell metacharacters
    "command substitution": "$(reboot)",
    "backtick substitution": "`reboot`",
    "pipe": "a|b",
    "and-and": "a&&b",
    "redirect": "a>b",
    "variable": "$HOME",
    "tilde": "~root",
    "glob": "*",
    # paths
    "path traversal": "../../etc/passwd",
    "dot dot": "..",
    "slash": "a/b",
    "windows traversal": "..\\..\\windows",
    # control characters
    "nul inside": "a\x00b",
    "nul alone": "\x00",
    "nul at the end": "mysite\x00",
    "trailing newline": "mysite\n",
    "leading newline": "\nmysite",
    "newline inside": "a\nb",
    "carriage return": "a\r\nb",
    "escape sequence": "\x1b[31mred",
    # Caddyfile and nginx syntax
    "caddy block injection": "a}\nevil.test {",
    "caddy placeholder": "{$HOME}",
    "nginx directive": "a;include /etc/passwd",
    # lone UTF-16 surrogate (valid JSON escape, not a valid character)
    "lone surrogate": "\ud800",
}


@pytest.mark.parametrize("name", BAD_NAMES.values(), ids=BAD_NAMES.keys())
def test_a_bad_name_in_json_is_400_with_the_rule(send, name):
    body = assert_refused(send("POST", "/api/sites", json.dumps({"site": name})), 400)
    assert body["detail"] == NAME_RULE and body["code"] == "invalid"


# Form bodies cannot carry a lone surrogate (it does not encode to UTF-8).
FORM_NAMES = {key: value for key, value in BAD_NAMES.items() if key != "lone surrogate"}


@pytest.mark.parametrize("name", FORM_NAMES.values(), ids=FORM_NAMES.keys())
def test_a_bad_name_in_a_form_is_400_with_the_rule(send, name):
    body = assert_refused(send("POST", "/api/sites", "site=" + quote(name, safe=""), FORM), 400)
    assert body["detail"] == NAME_RULE


@pytest.mark.parametrize("name", ["caddy", "admin", "mariadb", "api"])
def test_a_reserved_name_is_400_reserved(send, name):
    body = assert_refused(send("POST", "/api/sites", json.dumps({"site": name})), 400)
    assert body["code"] == "reserved"


# --- JSON values that are not strings -------------------------------------------

NOT_STRINGS = {
    "zero": "0",
    "integer": "42",
    "negative": "-1",
    "float": "1.5",
    "exponent": "1e3",
    "overflowing float": "1e999",
    "huge integer": "1" + "0" * 40,
    "true": "true",
    "false": "false",
    "null": "null",
    "empty list": "[]",
    "list of a good name": '["mysite"]',
    "empty object": "{}",
    "object": '{"name": "mysite"}',
}


@pytest.mark.parametrize("raw", NOT_STRINGS.values(), ids=NOT_STRINGS.keys())
def test_a_site_that_is_not_a_string_is_400(send, raw):
    body = assert_refused(send("POST", "/api/sites", f'{{"site": {raw}}}'), 400)
    assert "must be a string" in body["detail"]


# --- bodies that are not a JSON object with one 'site' ---------------------------

MALFORMED_JSON = {
    "unclosed object": b"{",
    "missing value": b'{"site": }',
    "unterminated string": b'{"site": "abc',
    "single quotes": b"{'site': 'abc'}",
    "form body labelled json": b"site=abc",
    "trailing garbage": b'{"site": "abc"} x',
    "two documents": b'{"site": "abc"}{"site": "def"}',
    "NaN": b'{"site": NaN}',
    "Infinity": b'{"site": Infinity}',
    "invalid utf-8": b'{"site": "\xff\xfe"}',
    "byte order mark": b'\xef\xbb\xbf{"site": "abc"}',
    "digits beyond Python's limit": b'{"site": ' + b"9" * 5000 + b"}",
    "nested past the recursion limit": b"[" * 60000,
    "null body": b"null",
    "a list body": b'["abc"]',
    "a string body": b'"abc"',
    "a number body": b"42",
    "a boolean body": b"true",
}


@pytest.mark.parametrize("raw", MALFORMED_JSON.values(), ids=MALFORMED_JSON.keys())
def test_malformed_json_is_400(send, raw):
    assert_refused(send("POST", "/api/sites", raw), 400)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"site": "abc", "site": "def"}',
        # Even agreeing duplicates: a client that sends two is confused.
        b'{"site": "abc", "site": "abc"}',
        b'{"site": "abc", "other": {"a": 1, "a": 2}}',
    ],
    ids=["different values", "same value", "nested"],
)
def test_duplicate_json_keys_are_400(send, raw):
    assert_refused(send("POST", "/api/sites", raw), 400)


@pytest.mark.parametrize(
    "raw",
    ["site=abc&site=def", "site=abc&site=abc"],
    ids=["different values", "same value"],
)
def test_a_repeated_form_field_is_400(send, raw):
    assert_refused(send("POST", "/api/sites", raw, FORM), 400)


@pytest.mark.parametrize(
    "raw, content_type",
    [
        ("{}", JSON),
        ("", JSON),
        ('{"name": "mysite"}', JSON),
        ('{"Site": "mysite"}', JSON),
        ('{"site ": "mysite"}', JSON),
        ("name=mysite", FORM),
        ("", FORM),
    ],
    ids=["empty object", "empty body", "other key", "capitalised key", "key with a space", "form", "empty form"],
)
def test_a_missing_site_field_is_400_naming_it(send, raw, content_type):
    body = assert_refused(send("POST", "/api/sites", raw, content_type), 400)
    assert "'site'" in body["detail"] and body["code"] == "required"


@pytest.mark.parametrize(
    "raw, content_type",
    [
        ('{"site": "extra1", "extra": 1}', JSON),
        # Fields of the Site that a client must not choose.
        ('{"site": "extra2", "status": "ACTIVE"}', JSON),
        ('{"site": "extra3", "domain": "bank.example"}', JSON),
        ('{"site": "extra4", "db_password": "x"}', JSON),
        ("site=extra5&owner=root", FORM),
    ],
    ids=["extra", "status", "domain", "db_password", "form"],
)
def test_unknown_fields_are_400_naming_them(send, raw, content_type):
    body = assert_refused(send("POST", "/api/sites", raw, content_type), 400)
    assert body["code"] == "unknown_field"


# --- content types and sizes ----------------------------------------------------


@pytest.mark.parametrize(
    "raw, content_type",
    [
        ("site=abc", "text/plain"),
        ("<site>abc</site>", "application/xml"),
        ("<site>abc</site>", "text/xml"),
        ("<p>abc</p>", "text/html"),
        ("site=abc", "application/octet-stream"),
        ("site: abc", "application/yaml"),
        ('{"site": "abc"}', "application/jsonx"),
        ('{"site": "abc"}', ""),
    ],
    ids=["text/plain", "application/xml", "text/xml", "text/html", "octet-stream", "yaml", "jsonx", "none"],
)
def test_an_unsupported_content_type_is_415(send, raw, content_type):
    body = assert_refused(send("POST", "/api/sites", raw, content_type), 415)
    assert body["code"] == "unsupported_media_type"


@pytest.mark.parametrize(
    "content_type",
    # (An unknown charset is ignored by Django, which then reads UTF-8.)
    ["application/json; charset=bz2_codec", "application/json; charset=utf-16", "application/json; charset=utf-32"],
    ids=["decompressing codec", "utf-16 label on utf-8", "utf-32 label on utf-8"],
)
def test_a_bad_charset_is_400(send, content_type):
    assert_refused(send("POST", "/api/sites", '{"site": "abc"}', content_type), 400)


def multipart(*parts: tuple[str, str | None, bytes]) -> bytes:
    """A multipart/form-data body of (field, filename, content) parts, with boundary "b"."""
    body = b""
    for field, filename, content in parts:
        disposition = f'form-data; name="{field}"' + (f'; filename="{filename}"' if filename else "")
        body += f"--b\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + content + b"\r\n"
    return body + b"--b--\r\n"


MULTIPART = "multipart/form-data; boundary=b"


@pytest.mark.parametrize(
    "raw",
    [
        multipart(("site", None, b"My-Site")),
        multipart(("site", "name.txt", b"mysite")),
        multipart(("site", None, b"mysite"), ("upload", "shell.php", b"<?php system($_GET['c']);")),
        multipart(("site", None, b"mysite"), ("site", None, b"mysite")),
        b"--b\r\nnot a part header\r\n",
    ],
    ids=["bad name", "name sent as a file", "extra file", "repeated field", "malformed"],
)
def test_bad_multipart_bodies_are_400(send, raw):
    assert_refused(send("POST", "/api/sites", raw, MULTIPART), 400)


def oversized(prefix: bytes, suffix: bytes) -> bytes:
    filler = settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1 - len(prefix) - len(suffix)
    return prefix + b"a" * filler + suffix


def oversized_multipart() -> bytes:
    """A good name plus a file part that takes the body one byte over the limit."""
    empty = multipart(("site", None, b"mysite"), ("f", "big.bin", b""))
    filler = settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1 - len(empty)
    return multipart(("site", None, b"mysite"), ("f", "big.bin", b"a" * filler))


@pytest.mark.parametrize(
    "raw, content_type",
    [
        (oversized(b'{"site": "', b'"}'), JSON),
        (oversized(b'{"site": "abc", "pad": "', b'"}'), JSON),
        (oversized(b"site=", b""), FORM),
        (oversized(b" " * 10 + b'{"site": "abc"}', b""), JSON),
        # Django counts only the plain fields of a multipart body; a file part
        # of any size would otherwise be read.
        (oversized_multipart(), MULTIPART),
    ],
    ids=["long name", "padding field", "form", "whitespace", "multipart file"],
)
def test_a_body_over_the_limit_is_413_json_not_an_html_page(send, raw, content_type):
    assert len(raw) == settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1
    body = assert_refused(send("POST", "/api/sites", raw, content_type), 413)
    assert body["code"] == "too_large"


def test_more_form_fields_than_django_allows_is_400_json(send):
    raw = "site=abc&" + "&".join(f"f{i}=" for i in range(settings.DATA_UPLOAD_MAX_NUMBER_FIELDS + 1))
    assert len(raw) < settings.DATA_UPLOAD_MAX_MEMORY_SIZE  # refused for the count, not the size
    assert_refused(send("POST", "/api/sites", raw, FORM), 400)


# --- methods and paths ----------------------------------------------------------


@pytest.mark.parametrize(
    "method, path",
    [
        ("PUT", "/api/sites"),
        ("PATCH", "/api/sites"),
        ("DELETE", "/api/sites"),
        ("PUT", "/api/sites/mysite"),
        ("POST", "/api/sites/mysite"),
        ("GET", "/api/sites/mysite/purge-cache"),
        ("POST", "/api/jobs/1"),
        ("DELETE", "/api/jobs/1"),
    ],
)
def test_a_method_the_resource_does_not_have_is_405_json(send, method, path):
    body = assert_refused(send(method, path, json.dumps({"site": "mysite"})), 405)
    assert body["code"] == "method_not_allowed"


# Names a client could put in the URL: every one is simply not a site.
PATH_NAMES = {key: value for key, value in FORM_NAMES.items() if value not in ("", ".", "..")}


@pytest.mark.parametrize("method", ["GET", "DELETE"])
@pytest.mark.parametrize("name", PATH_NAMES.values(), ids=PATH_NAMES.keys())
def test_a_bad_name_in_the_url_is_404_json(send, method, name):
    body = assert_refused(send(method, "/api/sites/" + quote(name, safe="")), 404)
    assert body["code"] == "not_found"


@pytest.mark.parametrize(
    "job_id", ["0", "99999999", "9223372036854775808", "1" + "0" * 40, "-1", "abc", "1.5", "1/steps"]
)
def test_a_job_id_that_names_no_job_is_404_json(send, job_id):
    assert_refused(send("GET", f"/api/jobs/{job_id}"), 404)


# --- a client that floods -----------------------------------------------------------


@pytest.fixture
def rate_of_three_per_minute(settings, monkeypatch):
    rates = {"user": "3/min"}
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}
    # DRF copies the rates into a class attribute when it is first imported;
    # changing the setting alone would leave the configured rate in force.
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", rates)


def client_with_its_own_token(username: str) -> APIClient:
    user = user_in_group(username, "Site operators")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


def test_a_token_over_its_rate_gets_429_json_while_another_token_is_unaffected(db, rate_of_three_per_minute):
    flooder, bystander = client_with_its_own_token("flooder"), client_with_its_own_token("bystander")
    assert [flooder.get("/api/sites").status_code for _ in range(3)] == [200, 200, 200]

    # Over the limit, a write is refused before it is looked at: nothing is created.
    body = assert_refused(flooder.post("/api/sites", {"site": "flood1"}, format="json"), 429)
    assert body["code"] == "throttled"
    response = flooder.get("/api/sites")
    assert response.status_code == 429 and 0 < int(response["Retry-After"]) <= 60

    assert bystander.get("/api/sites").status_code == 200
    assert bystander.post("/api/sites", {"site": "bystander1"}, format="json").status_code == 202
