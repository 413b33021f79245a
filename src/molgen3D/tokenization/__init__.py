"""Tokenizers: Qwen3-0.6B as released (`qwen3_0.6b_origin`), with the four unit tags
(`qwen3_0.6b_custom`), and the compact format-aware one (`molgen_compact`).

Build them with `molgen3d build-tokenizer` (`build.build_all`); load them with
`load.load_tokenizer("tokenizers:<name>")`; measure them with `stats.tokens_per_unit`.
"""
