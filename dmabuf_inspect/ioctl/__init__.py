"""ioctl"""
