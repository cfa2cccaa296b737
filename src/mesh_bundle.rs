//! The mesh's trust bundle on a cluster, published in a ConfigMap (`root-cert.pem`) for
//! node proxies to mount as their `--ca-root`: it holds only certificates, never a key,
//! so proxies need no access to the CA's Secret. Kept current through root rotations.

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};

/// The key of the bundle in the ConfigMap.
pub const BUNDLE_KEY: &str = "root-cert.pem";

/// Makes the ConfigMap `configmap` (NAMESPACE/NAME) hold `bundle`, creating it if need be.
pub async fn publish(client: &kube::Client, configmap: &str, bundle: &str) -> anyhow::Result<()> {
    let (namespace, name) = crate::mesh_secret::parse_name("--mesh-root-configmap", configmap)?;
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("", "v1", "ConfigMap"),
        "configmaps",
    );
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &ar);
    let mut obj = match api.get_opt(name).await? {
        Some(o) => o,
        None => {
            let mut o = DynamicObject::new(name, &ar).within(namespace);
            o.data = serde_json::json!({ "data": { BUNDLE_KEY: bundle } });
            api.create(&PostParams::default(), &o).await?;
            return Ok(());
        }
    };
    if obj.data["data"][BUNDLE_KEY].as_str() == Some(bundle) {
        return Ok(());
    }
    obj.data["data"][BUNDLE_KEY] = bundle.into();
    // The resourceVersion read makes this a conditional write.
    api.replace(name, &PostParams::default(), &obj).await?;
    Ok(())
}
