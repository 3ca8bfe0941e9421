"""The model side of tlg8-multitask: training, the guide's multitask MLP, its beam search,
and the one loader that maps a model file's format to its class.

It builds on the codec (`tlg8`), which imports nothing from here. The guide's modules
`multitask_model`, `beam_search_runtime` and `train_multitask` are these modules under
their guide names (see the top-level files of the same names).
"""
