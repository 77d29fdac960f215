"""Reads of the risk checkpoint shared by the back office, the API and exports."""
