"""The recipes: translation, captioning and the web demo, on TensorFlow.

Imported before any recipe module (`python -m recipes.translate` runs this first), it
keeps TensorFlow's C++ log lines off the terminal: see `recipes.tensorflow_logs`.
"""

from recipes import tensorflow_logs

tensorflow_logs.quiet_tensorflow_logs()
