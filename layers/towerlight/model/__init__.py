"""The served model: an immutable ``ModelBundle`` per version (``towerlight.model.bundle``) and the
``ModelRegistry`` that loads and swaps them (``towerlight.model.registry``).

The package imports nothing itself: the registry must be importable, and its background load started,
before numpy and onnxruntime are (see ``towerlight.model.registry.prefetch``).

Example::

    >>> from towerlight.model.registry import get_registry
    >>> get_registry().get().strategy
    'two_tower'
"""
