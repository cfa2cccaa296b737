//! Locality: where a proxy runs (its cluster and zone) and how near each endpoint is
//! to it. Endpoints get a priority, 0 for the nearest: the same cluster and zone, then
//! the same cluster in another zone, then another cluster (its own zone first). The
//! balancer sends a request to the nearest priority that has a usable endpoint and
//! fails over to the next when none has, as Istio's and Envoy's locality failover do.

use gatehouse_model::CLUSTER_LABEL;
use std::collections::BTreeMap;

/// Where a proxy runs. Unset parts prefer nothing: a proxy that does not know its zone
/// treats every zone alike.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Locality {
    /// The cluster it serves (as a merging controller names it).
    pub cluster: Option<String>,
    /// Its zone (`topology.kubernetes.io/zone`).
    pub zone: Option<String>,
}

impl Locality {
    /// Whether any preference applies.
    pub fn is_set(&self) -> bool {
        self.cluster.is_some() || self.zone.is_some()
    }

    /// The priority of an endpoint of an EndpointSlice with `labels`, in `zone`: 0 is
    /// the nearest. A slice without the cluster label is this cluster's own.
    pub fn priority(&self, labels: Option<&BTreeMap<String, String>>, zone: Option<&str>) -> u8 {
        let other_cluster = match (&self.cluster, labels.and_then(|l| l.get(CLUSTER_LABEL))) {
            (Some(mine), Some(theirs)) => mine != theirs,
            _ => false,
        };
        let other_zone = match (&self.zone, zone) {
            (Some(mine), Some(theirs)) => mine != theirs,
            _ => false,
        };
        u8::from(other_cluster) * 2 + u8::from(other_zone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(cluster: &str) -> BTreeMap<String, String> {
        BTreeMap::from([(CLUSTER_LABEL.to_string(), cluster.to_string())])
    }

    #[test]
    fn nearer_endpoints_have_lower_priorities() {
        let here = Locality {
            cluster: Some("east".into()),
            zone: Some("east-1a".into()),
        };
        let east = labels("east");
        let west = labels("west");
        assert_eq!(here.priority(Some(&east), Some("east-1a")), 0);
        assert_eq!(
            here.priority(None, Some("east-1a")),
            0,
            "unlabelled is ours"
        );
        assert_eq!(here.priority(Some(&east), Some("east-1b")), 1);
        assert_eq!(
            here.priority(Some(&east), None),
            0,
            "no zone: no preference"
        );
        assert_eq!(here.priority(Some(&west), Some("east-1a")), 2);
        assert_eq!(here.priority(Some(&west), Some("west-1a")), 3);
        // A proxy that knows nothing of where it runs prefers nothing.
        let anywhere = Locality::default();
        assert!(!anywhere.is_set());
        assert_eq!(anywhere.priority(Some(&west), Some("west-1a")), 0);
    }
}
