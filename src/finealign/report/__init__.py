"""finealign.report"""
