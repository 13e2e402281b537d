"""Figures of feature maps: statistics (:mod:`.mapstats`), drawing (:mod:`.figures`) and the
per-image figure set with PNG saving (:mod:`.draw`).

Beside the engine in the layering: it reads maps, taps and images (engine, contracts), never
export, bench or the CLI. matplotlib and Pillow are imported inside the functions that draw.
"""
