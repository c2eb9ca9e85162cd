"""normlab: batch statistics of BatchNorm vs PowerNorm, from ResNet-20/CIFAR-10 to Transformer/IWSLT14."""

__version__ = "0.1.0"
