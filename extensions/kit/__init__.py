"""What every extension may import: helpers shared by providers and provisioners.

Extensions know the message, config and status types of ``controller`` and
this kit, nothing else of the program.
"""
