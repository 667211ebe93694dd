"""LLaMA configs and builder, the bundled corpus and tokenizer, finite and streamed data, and
the noisy quadratic: everything the experiments train on (never imports ``analysis``).
"""
