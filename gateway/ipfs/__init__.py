"""The IPFS HTTP gateway (path gateway and trustless gateway specs).

handler.py parses and dispatches; each response format has its own file:
unixfs_file.py, unixfs_dir.py, block.py, car.py.
"""
