"""Each op's case tables and shared test bodies (the provider runners, the float64
reference, ``check_against_reference``), one module per op: ``cases.lrn``,
``cases.max_pool``, ``cases.dropout``, ``cases.conv2d_relu`` and ``cases.models``.

Test files import them from here, never from another test file, so that a test
module depends only on helper modules. No name here starts with ``test``, and the
file names match no ``python_files`` pattern: pytest collects nothing from them.
"""
