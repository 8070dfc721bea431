"""Policy helpers: render the program's Kubernetes objects to manifests and check them."""
