import pytest
from django.core.exceptions import ValidationError

from sites.models.validation import NAME_RULE, validate_site_name


@pytest.mark.parametrize("name", ["a", "mysite", "blog2", "x" * 32, "0"])
def test_lowercase_letters_and_digits_up_to_32_are_accepted(name):
    assert validate_site_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "MySite",
        "my-site",
        "my_site",
        "my.site",
        "my site",
        "x" * 33,
        "sité",
        "ѕite",
        "a\x00b",
        "a\n",
        "../etc",
        "a;drop",
    ],
)
def test_anything_else_is_refused_with_the_rule(name):
    with pytest.raises(ValidationError) as caught:
        validate_site_name(name)
    assert caught.value.messages == [NAME_RULE]


@pytest.mark.parametrize("name", [None, 42, ["a"], {"a": 1}])
def test_non_strings_are_refused(name):
    with pytest.raises(ValidationError, match="must be a string"):
        validate_site_name(name)


def test_infrastructure_names_are_reserved():
    with pytest.raises(ValidationError, match="reserved") as caught:
        validate_site_name("caddy")
    assert caught.value.error_list[0].code == "reserved"
