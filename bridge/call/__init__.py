"""One bridged call: its lifecycle, the policy it runs under, its recording and its summary."""
