"""finealign.serve"""
