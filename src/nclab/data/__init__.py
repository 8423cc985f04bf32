"""Data shipped inside the package (see FASHION_MNIST_LICENSE.txt)."""
