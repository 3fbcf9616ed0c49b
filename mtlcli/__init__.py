"""mtl: declarative multi-task deep learning on Keras 3 / TensorFlow.

Importing this package does not import TensorFlow.
"""

__version__ = "0.1.0"
