"""serving.package.is_blank: what the CLI and the HTTP server refuse as an empty text."""

from __future__ import annotations

import pytest

from serving.package import is_blank


@pytest.mark.parametrize("text", ["", " ", "\t\r\n", "\u00a0", "\u200b", "\ufeff", "\u200b\u200c\u200d\u2060", "\x00\x07", "\u00ad "])
def test_nothing_to_read_is_blank(text):
    assert is_blank(text)


@pytest.mark.parametrize("text", ["a", " ok ", "\u200bok", "😀", "\u0301", "。", "0"])
def test_anything_visible_is_not_blank(text):
    assert not is_blank(text)
