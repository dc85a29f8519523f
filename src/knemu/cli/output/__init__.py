"""What the CLI prints: kubectl's tables (``printers``), ``-o`` formats (``formats``), JSONPath
templates (``jsonpath``) and ``knemu describe`` (``describers``, ``describe_layout``)."""
