"""edgekd: distil a large vision classifier into a small student and ship it to offline devices."""

__version__ = "0.1.0"
