"""What each file of the hostile corpus must produce: (line, column, code) of every rejection,
and the counts. ``delimiter`` is the feed's delimiter."""

EXPECTED: dict[str, dict[str, object]] = {
    "quoting.csv": {
        "rows_read": 3,
        "rows_valid": 3,
        "rejections": [],
        "values": {"A-1": ("Widget, large", 'He said "hi"\nand left'), "A-2": ("Two lines", None)},
    },
    "bom_crlf.csv": {"rows_read": 2, "rows_valid": 2, "rejections": []},
    "semicolon.csv": {
        "delimiter": ";",
        "rows_read": 1,
        "rows_valid": 1,
        "rejections": [],
        "values": {"C-1": ("a;b", None)},
    },
    "tab.tsv": {"delimiter": "\t", "rows_read": 1, "rows_valid": 1, "rejections": []},
    "pipe.csv": {"delimiter": "|", "rows_read": 1, "rows_valid": 1, "rejections": []},
    "headers_any_order.csv": {
        "rows_read": 2,
        "rows_valid": 2,
        "rejections": [],
        "attributes": ["Colour"],  # kept (unknown_columns = keep, the default)
    },
    "row_faults.csv": {
        "rows_read": 19,
        "rows_valid": 2,
        "rejections": [
            (3, None, "ROW_LENGTH"),
            (4, None, "ROW_LENGTH"),
            (5, None, "INVALID_CHARACTER"),
            (6, None, "INVALID_ENCODING"),
            (7, "sku", "DUPLICATE_SKU"),
            (8, "sku", "INVALID_SKU"),
            (9, "name", "INVALID_NAME"),
            (10, "description", "INVALID_DESCRIPTION"),
            (11, "price", "INVALID_PRICE"),
            (12, "currency", "INVALID_CURRENCY"),
            (13, "quantity", "INVALID_QUANTITY"),
            (14, "category", "INVALID_CATEGORY"),
            (15, "brand", "INVALID_BRAND"),
            (16, "gtin", "INVALID_GTIN"),
            (17, "updated_at", "INVALID_TIMESTAMP"),
            (18, "active", "INVALID_BOOLEAN"),
            (19, "sku", "INVALID_SKU"),
        ],
    },
    "unterminated.csv": {
        "rows_read": 2,
        "rows_valid": 1,
        "rejections": [(3, None, "UNTERMINATED_QUOTE")],
    },
    "empty.csv": {"rows_read": 0, "rows_valid": 0, "rejections": []},
    "header_only.csv": {"rows_read": 0, "rows_valid": 0, "rejections": []},
    "missing_columns.csv": {
        "error": "MISSING_COLUMNS",
        "details": {"missing": ["name", "price", "currency"]},
    },
}
