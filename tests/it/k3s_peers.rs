//! Services, nodes and Kubernetes Events on the K3s-shaped node (`support::k3s`): real traffic.
