"""The llama.cpp engine, a package of small modules that only import downward:

engine (LlamaEngine, the TextEngine the worker calls) -> batch (BatchEngine: one decode thread, one
context) -> generation (GenerationLoop: admission, pre-emption, one decode per step) -> sequence
(a request's choices and sampler chains) -> kv (the KV ledger) -> hostcache (idle prefixes in RAM);
vision (the mmproj's image encoder, and image spans in prompts);
embed (shared decodes for embeddings); stream (DeltaStream, how a caller reads a request); leaves:
vocab, stops, defaults (context, parallel and cache-type defaults, the KV-size estimate), and the
prompt side: chat_template, toolcalls (formats written and parsed), grammar (JSON schema -> GBNF),
customtools (custom tools' grammars) over lark and regexp (Lark and regex -> gbnf's grammar trees).

Importing this package loads nothing: llama_cpp is imported by the modules that call it.
"""
