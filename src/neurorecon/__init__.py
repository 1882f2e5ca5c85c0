"""neurorecon: AI-assisted neuron reconstruction, proofreading and connectomics.

Quick start::

    from neurorecon.io import read_swc
    from neurorecon.qc import check_neuron
    neuron = read_swc("cell.swc")
    for finding in check_neuron(neuron):
        print(finding.check, finding.node_ids, finding.message)
"""

__version__ = "0.1.0"
