"""Post-processing (ours, not in the paper): array transforms (:mod:`.array`), their dictionary forms
(:mod:`.dictionary`) and the slab-wise inverse of the preprocessing (:mod:`.invert`)."""
