"""Containers on liblxc: model, configuration, lifecycle, helper processes."""
