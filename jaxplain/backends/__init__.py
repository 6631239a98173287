"""What jaxplain does differently per XLA backend.

`cpu`: the XLA:CPU tuning (compiler options, chunk sizes, unrolling, the zoo's
convolution and max-pool lowerings), with one switch to turn it off. GPU and TPU
programs take XLA's defaults and need no module of their own.
"""
