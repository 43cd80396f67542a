"""finealign.train"""
