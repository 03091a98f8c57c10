"""``stockade-cni``: the CNI plugin (commands, IPAM, pod links) and its installer.

Everything here is imported by a short-lived process the container runtime starts for every
sandbox, so modules import only the standard library, pyroute2 (lazily, for the commands that
touch links) and :mod:`controller.cniclient`; nothing from the compiler, kopf or kubernetes.
"""
