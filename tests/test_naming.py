from __future__ import annotations

import pytest

from components.naming import dns_label, is_dns_label, stack_namespace


@pytest.mark.parametrize(("stack", "expected"), [
    ("dev", "modelstack-dev"),
    ("PR_123", "modelstack-pr-123"),
    ("feature.x--y", "modelstack-feature-x-y"),
])
def test_stack_namespace_is_a_dns_label(stack, expected):
    assert stack_namespace("modelstack", stack) == expected


def test_long_names_stay_unique_and_valid():
    a = dns_label("modelstack", "a" * 80)
    b = dns_label("modelstack", "a" * 79 + "b")
    assert is_dns_label(a) and is_dns_label(b)
    assert a != b


def test_name_without_usable_characters_is_an_error():
    with pytest.raises(ValueError, match="cannot derive"):
        dns_label("___")
