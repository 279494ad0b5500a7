"""The ``hffm`` command line. It sits above every layer, so it may import them all."""
