"""The exact reference model: a Gaussian field whose denoiser and conditionals are known in closed form.

- :mod:`~multidiffusion.core.oracle.prompts`: prompt words → mean colours, alternatives ("red or blue"), mixtures.
- :mod:`~multidiffusion.core.oracle.field`: the field (:class:`GaussianField`, its pooled view) and its exact denoiser.
- :mod:`~multidiffusion.core.oracle.posterior`: the mixture posterior's per-call constants and exact gradient.
- :mod:`~multidiffusion.core.oracle.conditional`: the field given some of its pixels, E[x | known pixels].
- :mod:`~multidiffusion.core.oracle.stats`: image statistics to compare with the field's (correlation, variance).
"""
