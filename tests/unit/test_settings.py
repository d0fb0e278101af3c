from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from hosting.env import Env, read_dotenv


def env(**values: str) -> Env:
    return Env(values)


def test_int_rejects_words_and_names_the_variable():
    with pytest.raises(ImproperlyConfigured, match="WPFLEET_MAX_ATTEMPTS='three' is not a whole number"):
        env(WPFLEET_MAX_ATTEMPTS="three").integer("WPFLEET_MAX_ATTEMPTS", 3)


def test_int_enforces_its_range():
    with pytest.raises(ImproperlyConfigured, match="WPFLEET_MAX_ATTEMPTS=0 is below the minimum 1"):
        env(WPFLEET_MAX_ATTEMPTS="0").integer("WPFLEET_MAX_ATTEMPTS", 3, min=1)
    assert env(WPFLEET_MAX_ATTEMPTS=" 5 ").integer("WPFLEET_MAX_ATTEMPTS", 3, min=1) == 5


def test_missing_values_take_the_default_and_required_ones_fail():
    assert env().integer("X", 7) == 7
    assert env().text("X", "a") == "a"
    with pytest.raises(ImproperlyConfigured, match="DJANGO_SECRET_KEY is required"):
        env().text("DJANGO_SECRET_KEY")


def test_float_rejects_nan_and_text():
    with pytest.raises(ImproperlyConfigured, match="WPFLEET_POLL_SECONDS='nan' is not a finite number"):
        env(WPFLEET_POLL_SECONDS="nan").number("WPFLEET_POLL_SECONDS", 1.0)
    with pytest.raises(ImproperlyConfigured, match="is not a number"):
        env(WPFLEET_POLL_SECONDS="fast").number("WPFLEET_POLL_SECONDS", 1.0)
    with pytest.raises(ImproperlyConfigured, match="above the maximum 3"):
        env(WPFLEET_POLL_SECONDS="5").number("WPFLEET_POLL_SECONDS", 1.0, max=3)


def test_bool_accepts_the_usual_spellings_only():
    assert env(D="yes").flag("D", False) is True
    assert env(D="0").flag("D", True) is False
    with pytest.raises(ImproperlyConfigured, match="D='maybe' is not a boolean"):
        env(D="maybe").flag("D", False)


def test_sizes_are_parsed_to_bytes():
    assert env(M="512m").size("M", "1g") == 512 * 1024**2
    assert env().size("M", "1g") == 1024**3
    with pytest.raises(ImproperlyConfigured, match="M='lots' is not a size"):
        env(M="lots").size("M", "1g")


def test_choices_are_enforced():
    with pytest.raises(ImproperlyConfigured, match="is not one of: ondemand, dynamic"):
        env(PM="lazy").text("PM", "ondemand", choices=("ondemand", "dynamic"))


def test_urls_and_host_ports_are_checked():
    assert env(U="http://127.0.0.1:8080/").url("U", "http://x") == "http://127.0.0.1:8080"
    with pytest.raises(ImproperlyConfigured, match="U='127.0.0.1:8080' is not a http/https URL"):
        env(U="127.0.0.1:8080").url("U", "http://x")
    assert env(H="10.10.0.20:3306").host_port("H", "x") == "10.10.0.20:3306"
    with pytest.raises(ImproperlyConfigured, match="is not a host or host:port"):
        env(H="db; rm -rf /").host_port("H", "x")


def test_database_url_sqlite_is_relative_to_the_repository(tmp_path: Path):
    db = env(DATABASE_URL="sqlite:///var/x.sqlite3").database("DATABASE_URL", "sqlite:///a", base_dir=tmp_path)
    assert db["ENGINE"] == "hosting.sqlite3"
    assert db["NAME"] == str(tmp_path / "var/x.sqlite3")
    assert db["OPTIONS"]["transaction_mode"] == "IMMEDIATE"
    assert "journal_mode=WAL" in db["OPTIONS"]["init_command"]


def test_database_url_mysql_is_split_and_decoded(tmp_path: Path):
    db = env(DATABASE_URL="mysql://wpfleet:p%40ss@127.0.0.1:3307/wpfleet").database(
        "DATABASE_URL", "", base_dir=tmp_path
    )
    assert (db["USER"], db["PASSWORD"], db["HOST"], db["PORT"], db["NAME"]) == (
        "wpfleet",
        "p@ss",
        "127.0.0.1",
        "3307",
        "wpfleet",
    )


def test_database_url_with_unknown_scheme_is_refused(tmp_path: Path):
    with pytest.raises(ImproperlyConfigured, match="only sqlite:// and mysql://"):
        env(DATABASE_URL="postgres://x/y").database("DATABASE_URL", "", base_dir=tmp_path)


def test_process_environment_overrides_the_dotenv_file(tmp_path: Path):
    dotenv = tmp_path / ".env"
    dotenv.write_text("# comment\nA=from-file\nB='quoted value'\nexport C=3\n")
    values = read_dotenv(dotenv)
    assert values == {"A": "from-file", "B": "quoted value", "C": "3"}
    merged = Env({"A": "from-env"}, values)
    assert merged.text("A") == "from-env"
    assert merged.text("B") == "quoted value"


def test_malformed_dotenv_line_is_reported_with_its_number(tmp_path: Path):
    dotenv = tmp_path / ".env"
    dotenv.write_text("A=1\nthis is not a setting\n")
    with pytest.raises(ImproperlyConfigured, match=r"\.env:2: expected KEY=value"):
        read_dotenv(dotenv)


def test_a_bad_setting_stops_manage_py_with_a_message_naming_it():
    import os
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        env={**os.environ, "WPFLEET_MAX_ATTEMPTS": "lots"},
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode != 0
    assert "WPFLEET_MAX_ATTEMPTS='lots' is not a whole number" in result.stderr


def test_an_explicitly_empty_value_is_kept_only_where_allowed():
    assert env(SEED="").text("SEED", "/usr/src/wordpress", allow_empty=True) == ""
    assert env(SEED="").text("SEED", "/usr/src/wordpress") == "/usr/src/wordpress"
