"""The trainer's runtime: env servers, the buffer pool, the dynamic batcher and the learner thread.

`train.py` wires them together; `docs/architecture.md` ("Runtime") says who blocks on whom.
"""
