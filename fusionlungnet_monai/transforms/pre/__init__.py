"""Preprocessing: the paper's steps (§4.7) and ours, as array transforms (:mod:`.array`, :mod:`.picture`), their
dictionary forms (:mod:`.dictionary`) and the chain that every config takes (:mod:`.chain`)."""
