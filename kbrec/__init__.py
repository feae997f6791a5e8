"""The shared base of every other package: the model-repository contract, article records
and id rules, tokenization, atomic files, HTML to text. No TensorFlow, no server code."""
