"""uotlib: generative modelling of MNIST with unbalanced optimal transport.

The library behind the book: data (:mod:`uotlib.data`), networks
(:mod:`uotlib.models`), the semi-dual UOT and GAN losses
(:mod:`uotlib.losses`), R1 (:mod:`uotlib.penalty`), EMA (:mod:`uotlib.ema`),
training (:mod:`uotlib.train`), the report's experiments
(:mod:`uotlib.experiments`), FID and friends (:mod:`uotlib.fid`) and small
discrete solvers (:mod:`uotlib.discrete`).
"""

__version__ = "0.1.0"
