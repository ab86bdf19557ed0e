"""Clustering: this member's etcd, the cluster certificate, member heartbeats."""
