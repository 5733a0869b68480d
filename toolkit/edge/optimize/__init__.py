"""`toolkit optimize`: from a contract classifier to the one file to ship on this machine.
Never imports torch.

- config.py: the options (OptimizeOptions) and OptimizeError.
- split.py: the selection and report parts of the validation images (disjoint, seeded).
- candidates.py: which file runs on which provider with which hint, schedule and threads, in order.
- accuracy.py: files built once by the quantize stage; every variant through infer.evaluate_stream.
- speed.py: the candidates as bench plans, timed in interleaved rounds beside the measured roof.
- select.py: acceptance, the winner and the tie rule, the report split's interval.
- budget.py: the time box and the cost estimates it decides by.
- search.py: the state of a run and its search; report.py and markdown.py: what it writes.
- run.py: `optimize`, the whole run.
"""

from toolkit.edge.optimize.config import OBJECTIVES, OptimizeError, OptimizeOptions
from toolkit.edge.optimize.run import optimize

__all__ = ["OBJECTIVES", "OptimizeError", "OptimizeOptions", "optimize"]
