"""``key_path``: a record's address by its key, OData style, as one path segment.

A fork to an OData ERP addressed order lines as ``Lines(OrderNo='SO-1',LineNo=3)`` and
built the text by hand: a quote in a value, a space or a ``/`` then addressed another
record, or none. The helper quotes text (quotes doubled), leaves integers bare, and
percent-encodes every value so that it stays one segment.
"""

from __future__ import annotations

import pytest

from service.framework.upstream import PathSegment
from service.framework.upstream import UpstreamClient
from service.framework.upstream import key_path


@pytest.mark.parametrize(
    ("made", "text"),
    [
        (key_path("Lines", OrderNo="SO-1", LineNo=3), "Lines(OrderNo='SO-1',LineNo=3)"),
        (key_path("Customers", "ALFKI"), "Customers('ALFKI')"),
        (key_path("Items", 42), "Items(42)"),
        (key_path("Items", -7), "Items(-7)"),
        (key_path("Customers", "O'Brien"), "Customers('O''Brien')"),
        (key_path("Customers", "''"), "Customers('''''')"),
        (key_path("Files", "a/b c"), "Files('a%2Fb%20c')"),
        (key_path("Files", "100%"), "Files('100%25')"),
        (key_path("Files", "?#&="), "Files('%3F%23%26%3D')"),
        (key_path("Names", "Åse"), "Names('%C3%85se')"),
        (key_path("Pairs", Key="a,b=(c)"), "Pairs(Key='a%2Cb%3D%28c%29')"),
        (key_path("Sales Lines", Order="x"), "Sales%20Lines(Order='x')"),
    ],
)
def test_a_key_path_quotes_text_doubles_quotes_and_encodes_each_value(made, text):
    assert made == text
    assert isinstance(made, PathSegment)


def test_named_parts_keep_the_order_they_are_given_in():
    assert key_path("L", LineNo=3, OrderNo="SO-1") == "L(LineNo=3,OrderNo='SO-1')"


@pytest.mark.parametrize(
    ("key", "keys"),
    [((), {}), (("a", "b"), {}), (("a",), {"B": 1})],
)
def test_one_key_value_or_named_parts_exactly(key, keys):
    with pytest.raises(TypeError, match="one key value, or named key parts"):
        key_path("Lines", *key, **keys)


@pytest.mark.parametrize("value", [True, 1.5, None, b"x", ["a"]])
def test_a_key_part_that_is_not_text_or_an_integer_is_refused(value):
    with pytest.raises(TypeError, match="a key part is text or an integer"):
        key_path("Lines", value)


def test_the_client_puts_a_key_path_into_a_url_as_it_is_and_encodes_anything_else():
    client = UpstreamClient("http://erp.example/odata", "test-token")
    line = key_path("Lines", OrderNo="SO 1", LineNo=3)
    assert (
        client.url("sales", line)
        == "http://erp.example/odata/sales/Lines(OrderNo='SO%201',LineNo=3)"
    )
    # The same text as a plain string is an id: encoded as one segment, parentheses and all.
    assert client.url(str(line)) == (
        "http://erp.example/odata/Lines%28OrderNo%3D%27SO%25201%27%2CLineNo%3D3%29"
    )
