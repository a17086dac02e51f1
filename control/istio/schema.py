"""Istio's API schema as data: message -> field (lowerCamelCase JSON name) -> type.

Taken from the istio/api protos (networking/v1alpha3/{virtual_service,destination_rule,gateway,service_entry,
sidecar,workload_entry}.proto, security/v1beta1/{peer_authentication,authorization_policy,
request_authentication}.proto, telemetry/v1alpha1/telemetry.proto, mesh/v1alpha1/config.proto and
operator/v1alpha1/operator.proto) and the Kubernetes core/apps types for the few fields the mesh reads.
v1alpha3, v1beta1 and v1 of an Istio kind share one schema, as they do in Istio.

Type strings (read by `control.istio.validate`):
    string bool int32 uint32 int64 uint64 double   protobuf scalars (JSON forms)
    duration        Go/gogo-jsonpb duration string ("1s", "0.5s", "100ms", "1h30m"); >= 1ms, ms precision
    duration0       the same, but 0 is allowed: fields the webhook does not range-check or where 0s has a
                    meaning (HTTPCookie.ttl 0s = session cookie; TCPSettings.idleTimeout 0s = disabled)
    port            uint32 in 1..65535 (Istio's ValidatePort)
    percent         double in 0..100
    regex           an RE2 regular expression (checked with Python `re` plus RE2's missing features)
    enum:A|B|C      a protobuf enum, by name
    []T             repeated T;   map:T  map<string, T>
    struct          google.protobuf.Struct / free-form (not checked inside)
    any             anything (Kubernetes fields the mesh does not read)
    Name            another message in MESSAGES
A trailing "!" marks a field Istio's validation requires. ONEOFS lists fields of which at most one may be set.
OPEN marks messages whose unknown fields are not an error (Kubernetes objects we read only partly).
"""
from __future__ import annotations

_TLS_VERSION = "enum:TLS_AUTO|TLSV1_0|TLSV1_1|TLSV1_2|TLSV1_3"
_WORKLOAD_MODE = "enum:CLIENT_AND_SERVER|CLIENT|SERVER"
_ISTIO_METRIC = ("enum:ALL_METRICS|REQUEST_COUNT|REQUEST_DURATION|REQUEST_SIZE|RESPONSE_SIZE|"
                 "TCP_OPENED_CONNECTIONS|TCP_CLOSED_CONNECTIONS|TCP_SENT_BYTES|TCP_RECEIVED_BYTES|"
                 "GRPC_REQUEST_MESSAGES|GRPC_RESPONSE_MESSAGES")

MESSAGES: dict[str, dict[str, str]] = {
    # ---- common ------------------------------------------------------------------------------------------
    # istio.type.v1beta1.WorkloadSelector: security/telemetry `selector` and DestinationRule `workloadSelector`
    "WorkloadSelector": {"matchLabels": "map:string"},
    # istio.networking.v1alpha3.WorkloadSelector: Sidecar and ServiceEntry `workloadSelector` (field `labels`)
    "NetworkingWorkloadSelector": {"labels": "map:string"},
    "PolicyTargetReference": {"group": "string", "kind": "string!", "name": "string!", "namespace": "string"},
    "StringMatch": {"exact": "string", "prefix": "string", "regex": "regex"},
    "Percent": {"value": "percent"},
    "PortSelector": {"number": "port"},
    "Destination": {"host": "string!", "subset": "string", "port": "PortSelector"},
    "Headers": {"request": "HeaderOperations", "response": "HeaderOperations"},
    "HeaderOperations": {"set": "map:string", "add": "map:string", "remove": "[]string"},

    # ---- networking: VirtualService ----------------------------------------------------------------------
    "VirtualService": {"hosts": "[]string", "gateways": "[]string", "http": "[]HTTPRoute", "tls": "[]TLSRoute",
                       "tcp": "[]TCPRoute", "exportTo": "[]string"},
    "HTTPRoute": {"name": "string", "match": "[]HTTPMatchRequest", "route": "[]HTTPRouteDestination",
                  "redirect": "HTTPRedirect", "directResponse": "HTTPDirectResponse", "delegate": "Delegate",
                  "rewrite": "HTTPRewrite", "timeout": "duration", "retries": "HTTPRetry",
                  "fault": "HTTPFaultInjection", "mirror": "Destination", "mirrors": "[]HTTPMirrorPolicy",
                  "mirrorPercent": "uint32", "mirror_percent": "uint32", "mirrorPercentage": "Percent", "corsPolicy": "CorsPolicy",
                  "headers": "Headers"},
    "HTTPMatchRequest": {"name": "string", "uri": "StringMatch", "scheme": "StringMatch", "method": "StringMatch",
                         "authority": "StringMatch", "headers": "map:StringMatch", "port": "port",
                         "sourceLabels": "map:string", "gateways": "[]string", "queryParams": "map:StringMatch",
                         "ignoreUriCase": "bool", "withoutHeaders": "map:StringMatch",
                         "sourceNamespace": "string", "statPrefix": "string"},
    "HTTPRouteDestination": {"destination": "Destination!", "weight": "int32", "headers": "Headers"},
    "RouteDestination": {"destination": "Destination!", "weight": "int32"},
    "Delegate": {"name": "string", "namespace": "string"},
    "HTTPRedirect": {"uri": "string", "authority": "string", "port": "port",
                     "derivePort": "enum:FROM_PROTOCOL_DEFAULT|FROM_REQUEST_PORT", "scheme": "string",
                     "redirectCode": "uint32", "prefixRewrite": "string"},
    "HTTPDirectResponse": {"status": "uint32!", "body": "HTTPBody"},
    "HTTPBody": {"string": "string", "bytes": "string"},
    "HTTPRewrite": {"uri": "string", "authority": "string", "uriRegexRewrite": "RegexRewrite"},
    "RegexRewrite": {"match": "regex", "rewrite": "string"},
    "HTTPRetry": {"attempts": "int32", "perTryTimeout": "duration", "retryOn": "string",
                  "retryRemoteLocalities": "bool", "retryIgnorePreviousHosts": "bool", "backoff": "duration"},
    "CorsPolicy": {"allowOrigins": "[]StringMatch", "allowOrigin": "[]string", "allowMethods": "[]string",
                   "allowHeaders": "[]string", "exposeHeaders": "[]string", "maxAge": "duration",
                   "allowCredentials": "bool", "unmatchedPreflights": "enum:UNSPECIFIED|FORWARD|IGNORE"},
    "HTTPFaultInjection": {"delay": "FaultDelay", "abort": "FaultAbort"},
    "FaultDelay": {"fixedDelay": "duration", "exponentialDelay": "duration", "percentage": "Percent",
                   "percent": "int32"},
    "FaultAbort": {"httpStatus": "int32", "grpcStatus": "string", "http2Error": "string", "percentage": "Percent"},
    "HTTPMirrorPolicy": {"destination": "Destination!", "percentage": "Percent"},
    "TLSRoute": {"match": "[]TLSMatchAttributes!", "route": "[]RouteDestination"},
    "TLSMatchAttributes": {"sniHosts": "[]string!", "destinationSubnets": "[]string", "port": "port",
                           "sourceLabels": "map:string", "gateways": "[]string", "sourceNamespace": "string"},
    "TCPRoute": {"match": "[]L4MatchAttributes", "route": "[]RouteDestination"},
    "L4MatchAttributes": {"destinationSubnets": "[]string", "port": "port", "sourceSubnet": "string",
                          "sourceLabels": "map:string", "gateways": "[]string", "sourceNamespace": "string"},

    # ---- networking: DestinationRule ---------------------------------------------------------------------
    "DestinationRule": {"host": "string!", "trafficPolicy": "TrafficPolicy", "subsets": "[]Subset",
                        "exportTo": "[]string", "workloadSelector": "WorkloadSelector"},
    "TrafficPolicy": {"loadBalancer": "LoadBalancerSettings", "connectionPool": "ConnectionPoolSettings",
                      "outlierDetection": "OutlierDetection", "tls": "ClientTLSSettings",
                      "portLevelSettings": "[]PortTrafficPolicy", "tunnel": "TunnelSettings",
                      "proxyProtocol": "ProxyProtocol", "retryBudget": "RetryBudget"},
    "PortTrafficPolicy": {"port": "PortSelector", "loadBalancer": "LoadBalancerSettings",
                          "connectionPool": "ConnectionPoolSettings", "outlierDetection": "OutlierDetection",
                          "tls": "ClientTLSSettings"},
    "Subset": {"name": "string!", "labels": "map:string", "trafficPolicy": "TrafficPolicy"},
    "LoadBalancerSettings": {
        "simple": "enum:UNSPECIFIED|LEAST_CONN|RANDOM|PASSTHROUGH|ROUND_ROBIN|LEAST_REQUEST",
        "consistentHash": "ConsistentHashLB", "localityLbSetting": "LocalityLoadBalancerSetting",
        "warmupDurationSecs": "duration", "warmup": "WarmupConfiguration",
        "backendUtilization": "BackendUtilization", "zoneAwareLbSetting": "ZoneAwareLbSetting"},
    "BackendUtilization": {"errorUtilizationPenaltyPercent": "uint32", "metricNamesForComputingUtilization": "[]string",
                           "weightExpirationPeriod": "duration", "weightStabilizationPeriod": "duration",
                           "weightUpdatePeriod": "duration"},
    "ZoneAwareLbSetting": {"enabled": "bool", "failover": "[]LocalityFailover", "failoverPriority": "[]string",
                           "minClusterSize": "uint32"},
    "ConsistentHashLB": {"httpHeaderName": "string", "httpCookie": "HTTPCookie", "useSourceIp": "bool",
                         "httpQueryParameterName": "string", "ringHash": "RingHash", "maglev": "MagLev",
                         "minimumRingSize": "uint64"},
    "HTTPCookie": {"name": "string!", "path": "string", "ttl": "duration0", "attributes": "[]CookieAttribute"},
    "CookieAttribute": {"name": "string!", "value": "string"},
    "RingHash": {"minimumRingSize": "uint64"},
    "MagLev": {"tableSize": "uint64"},
    "LocalityLoadBalancerSetting": {"distribute": "[]LocalityDistribute", "failover": "[]LocalityFailover",
                                    "failoverPriority": "[]string", "enabled": "bool"},
    "LocalityDistribute": {"from": "string", "to": "map:uint32"},
    "LocalityFailover": {"from": "string", "to": "string"},
    "WarmupConfiguration": {"duration": "duration!", "minimumPercent": "percent", "aggression": "double"},
    "ConnectionPoolSettings": {"tcp": "TCPSettings", "http": "HTTPSettings"},
    "TCPSettings": {"maxConnections": "int32", "connectTimeout": "duration", "tcpKeepalive": "TcpKeepalive",
                    "maxConnectionDuration": "duration", "idleTimeout": "duration0"},
    "TcpKeepalive": {"probes": "uint32", "time": "duration", "interval": "duration"},
    "HTTPSettings": {"http1MaxPendingRequests": "int32", "http2MaxRequests": "int32",
                     "maxRequestsPerConnection": "int32", "maxRetries": "int32", "idleTimeout": "duration",
                     "h2UpgradePolicy": "enum:DEFAULT|DO_NOT_UPGRADE|UPGRADE", "useClientProtocol": "bool",
                     "maxConcurrentStreams": "int32", "http2KeepAlive": "HTTP2KeepAlive"},
    "HTTP2KeepAlive": {"interval": "duration!", "timeout": "duration!"},
    "OutlierDetection": {"splitExternalLocalOriginErrors": "bool", "consecutiveLocalOriginFailures": "uint32",
                         "consecutiveGatewayErrors": "uint32", "consecutive5xxErrors": "uint32",
                         "consecutiveErrors": "int32", "interval": "duration", "baseEjectionTime": "duration",
                         "maxEjectionPercent": "percent", "minHealthPercent": "percent",
                         "outlierDetectionHttpErrorCodes": "[]int32"},
    "ClientTLSSettings": {"mode": "enum:DISABLE|SIMPLE|MUTUAL|ISTIO_MUTUAL", "clientCertificate": "string",
                          "privateKey": "string", "caCertificates": "string", "credentialName": "string",
                          "subjectAltNames": "[]string", "sni": "string", "insecureSkipVerify": "bool",
                          "caCrl": "string"},
    "TunnelSettings": {"protocol": "enum:CONNECT|POST", "targetHost": "string!", "targetPort": "port"},
    "ProxyProtocol": {"version": "enum:V1|V2"},
    "RetryBudget": {"percent": "percent", "minRetryConcurrency": "uint32", "budgetInterval": "duration"},

    # ---- networking: Gateway -----------------------------------------------------------------------------
    "Gateway": {"servers": "[]Server!", "selector": "map:string"},
    "Server": {"port": "GatewayPort!", "bind": "string", "hosts": "[]string!", "tls": "ServerTLSSettings",
               "defaultEndpoint": "string", "name": "string"},
    # number: a port, or 0 with a unix:// bind (the Server rule checks the range, knowing the bind)
    "GatewayPort": {"number": "uint32!", "protocol": "string!", "name": "string!", "targetPort": "uint32"},
    "ServerTLSSettings": {
        "httpsRedirect": "bool",
        "mode": "enum:PASSTHROUGH|SIMPLE|MUTUAL|AUTO_PASSTHROUGH|ISTIO_MUTUAL|OPTIONAL_MUTUAL",
        "serverCertificate": "string", "privateKey": "string", "caCertificates": "string", "caCrl": "string",
        "credentialName": "string", "credentialNames": "[]string", "tlsCertificates": "[]TLSCertificate",
        "subjectAltNames": "[]string", "verifyCertificateSpki": "[]string", "verifyCertificateHash": "[]string",
        "minProtocolVersion": _TLS_VERSION, "maxProtocolVersion": _TLS_VERSION, "cipherSuites": "[]string",
        "caCertCredentialName": "string", "ecdhCurves": "[]string", "insecureSkipVerify": "bool"},
    "TLSCertificate": {"serverCertificate": "string", "privateKey": "string", "caCertificates": "string"},

    # ---- networking: ServiceEntry, WorkloadEntry, Sidecar ------------------------------------------------
    "ServiceEntry": {"hosts": "[]string!", "addresses": "[]string", "ports": "[]ServicePort",
                     "location": "enum:MESH_EXTERNAL|MESH_INTERNAL",
                     "resolution": "enum:NONE|STATIC|DNS|DNS_ROUND_ROBIN|DYNAMIC_DNS",
                     "endpoints": "[]WorkloadEntry", "workloadSelector": "NetworkingWorkloadSelector",
                     "exportTo": "[]string", "subjectAltNames": "[]string"},
    "ServicePort": {"number": "port!", "protocol": "string", "name": "string!", "targetPort": "port"},
    "WorkloadEntry": {"address": "string", "ports": "map:port", "labels": "map:string", "network": "string",
                      "locality": "string", "weight": "uint32", "serviceAccount": "string"},
    "Sidecar": {"workloadSelector": "NetworkingWorkloadSelector", "ingress": "[]IstioIngressListener",
                "egress": "[]IstioEgressListener", "inboundConnectionPool": "ConnectionPoolSettings",
                "outboundTrafficPolicy": "OutboundTrafficPolicy"},
    "IstioIngressListener": {"port": "SidecarPort!", "bind": "string", "captureMode": "enum:DEFAULT|IPTABLES|NONE",
                             "defaultEndpoint": "string", "tls": "ServerTLSSettings",
                             "connectionPool": "ConnectionPoolSettings"},
    "IstioEgressListener": {"port": "SidecarPort", "bind": "string", "captureMode": "enum:DEFAULT|IPTABLES|NONE",
                            "hosts": "[]string!"},
    "SidecarPort": {"number": "uint32", "protocol": "string", "name": "string", "targetPort": "uint32"},
    "OutboundTrafficPolicy": {"mode": "enum:REGISTRY_ONLY|ALLOW_ANY", "egressProxy": "Destination"},

    # ---- security ----------------------------------------------------------------------------------------
    "PeerAuthentication": {"selector": "WorkloadSelector", "mtls": "MutualTLS", "portLevelMtls": "map:MutualTLS"},
    "MutualTLS": {"mode": "enum:UNSET|DISABLE|PERMISSIVE|STRICT"},
    "AuthorizationPolicy": {"selector": "WorkloadSelector", "targetRef": "PolicyTargetReference",
                            "targetRefs": "[]PolicyTargetReference", "rules": "[]Rule",
                            "action": "enum:ALLOW|DENY|AUDIT|CUSTOM", "provider": "ExtensionProvider"},
    "ExtensionProvider": {"name": "string!"},
    "Rule": {"from": "[]RuleFrom", "to": "[]RuleTo", "when": "[]Condition"},
    "RuleFrom": {"source": "Source"},
    "RuleTo": {"operation": "Operation"},
    "Source": {f: "[]string" for f in (
        "principals", "notPrincipals", "requestPrincipals", "notRequestPrincipals", "namespaces", "notNamespaces",
        "ipBlocks", "notIpBlocks", "remoteIpBlocks", "notRemoteIpBlocks", "serviceAccounts", "notServiceAccounts",
        "trustDomains", "notTrustDomains")},
    "Operation": {f: "[]string" for f in (
        "hosts", "notHosts", "ports", "notPorts", "methods", "notMethods", "paths", "notPaths")},
    "Condition": {"key": "string!", "values": "[]string", "notValues": "[]string"},
    "RequestAuthentication": {"selector": "WorkloadSelector", "targetRef": "PolicyTargetReference",
                              "targetRefs": "[]PolicyTargetReference", "jwtRules": "[]JWTRule"},
    "JWTRule": {"issuer": "string!", "audiences": "[]string", "jwksUri": "string", "jwks": "string",
                "fromHeaders": "[]JWTHeader", "fromParams": "[]string", "fromCookies": "[]string",
                "outputPayloadToHeader": "string", "forwardOriginalToken": "bool",
                "outputClaimToHeaders": "[]ClaimToHeader", "timeout": "duration",
                "spaceDelimitedClaims": "[]string", "jwks_uri": "string", "presence": "enum:OPTIONAL|REQUIRED"},
    "JWTHeader": {"name": "string!", "prefix": "string"},
    "ClaimToHeader": {"header": "string!", "claim": "string!"},

    # ---- telemetry ---------------------------------------------------------------------------------------
    "Telemetry": {"selector": "WorkloadSelector", "targetRef": "PolicyTargetReference",
                  "targetRefs": "[]PolicyTargetReference", "tracing": "[]Tracing", "metrics": "[]Metrics",
                  "accessLogging": "[]AccessLogging"},
    "ProviderRef": {"name": "string!"},
    "Tracing": {"match": "TracingSelector", "providers": "[]ProviderRef", "randomSamplingPercentage": "percent",
                "disableSpanReporting": "bool", "customTags": "map:CustomTag",
                "useRequestIdForTraceSampling": "bool", "enableIstioTags": "bool",
                "disableContextPropagation": "bool"},
    "TracingSelector": {"mode": _WORKLOAD_MODE},
    "CustomTag": {"literal": "TagLiteral", "environment": "TagEnvironment", "header": "TagHeader",
                  "formatter": "TagFormatter"},
    "TagLiteral": {"value": "string!"},
    "TagEnvironment": {"name": "string!", "defaultValue": "string"},
    "TagHeader": {"name": "string!", "defaultValue": "string"},
    "TagFormatter": {"value": "string!"},
    "Metrics": {"providers": "[]ProviderRef", "overrides": "[]MetricsOverrides", "reportingInterval": "duration"},
    "MetricsOverrides": {"match": "MetricSelector", "disabled": "bool", "tagOverrides": "map:TagOverride"},
    "MetricSelector": {"metric": _ISTIO_METRIC, "customMetric": "string", "mode": _WORKLOAD_MODE},
    "TagOverride": {"operation": "enum:UPSERT|REMOVE", "value": "string"},
    "AccessLogging": {"match": "LogSelector", "providers": "[]ProviderRef", "disabled": "bool",
                      "filter": "AccessLogFilter"},
    "LogSelector": {"mode": _WORKLOAD_MODE},
    "AccessLogFilter": {"expression": "string"},

    # ---- install: IstioOperator (mesh-wide settings) -----------------------------------------------------
    "IstioOperator": {"profile": "string", "hub": "string", "tag": "any", "revision": "string",
                      "namespace": "string", "installPackagePath": "string", "compatibilityVersion": "string",
                      "meshConfig": "MeshConfig", "components": "struct", "values": "struct",
                      "unvalidatedValues": "struct"},
    "MeshConfig": {
        "outboundTrafficPolicy": "MeshOutboundTrafficPolicy", "accessLogFile": "string",
        "accessLogFormat": "string", "accessLogEncoding": "enum:TEXT|JSON", "enableTracing": "bool",
        "enableAutoMtls": "bool", "trustDomain": "string", "trustDomainAliases": "[]string",
        "rootNamespace": "string", "connectTimeout": "duration", "protocolDetectionTimeout": "duration",
        "dnsRefreshRate": "duration", "defaultConfig": "struct", "defaultProviders": "DefaultProviders",
        "extensionProviders": "[]struct", "defaultServiceExportTo": "[]string",
        "defaultVirtualServiceExportTo": "[]string", "defaultDestinationRuleExportTo": "[]string",
        "localityLbSetting": "LocalityLoadBalancerSetting", "h2UpgradePolicy": "enum:DO_NOT_UPGRADE|UPGRADE",
        "inboundTrafficPolicy": "struct", "defaultHttpRetryPolicy": "HTTPRetry",
        "defaultTrafficPolicy": "TrafficPolicy", "ingressClass": "string", "ingressService": "string",
        "ingressControllerMode": "enum:UNSPECIFIED|OFF|DEFAULT|STRICT", "ingressSelector": "string",
        "enablePrometheusMerge": "bool", "disableEnvoyListenerLog": "bool", "tcpKeepalive": "TcpKeepalive",
        "pathNormalization": "struct", "meshMTLS": "struct", "tlsDefaults": "struct", "caCertificates": "[]struct",
        "serviceSettings": "[]struct", "discoverySelectors": "[]struct", "configSources": "[]struct",
        "proxyHttpPort": "int32", "proxyListenPort": "int32", "proxyInboundListenPort": "int32",
        "enableEnvoyAccessLogService": "bool", "accessLogFormatString": "string", "verifyCertificateAtClient": "bool",
        "outboundClusterStatName": "string", "inboundClusterStatName": "string", "certificates": "[]struct",
        "thriftConfig": "struct", "serviceScopeConfigs": "[]struct"},
    "MeshOutboundTrafficPolicy": {"mode": "enum:REGISTRY_ONLY|ALLOW_ANY"},
    "DefaultProviders": {"tracing": "[]string", "metrics": "[]string", "accessLogging": "[]string"},

    # ---- Kubernetes (only what the mesh reads is typed; the rest is open) --------------------------------
    "K8sServiceSpec": {"selector": "map:string", "ports": "[]K8sServicePort", "type": "string",
                       "clusterIP": "string", "externalName": "string"},
    "K8sServicePort": {"name": "string", "port": "port!", "targetPort": "any", "protocol": "enum:TCP|UDP|SCTP",
                       "appProtocol": "string", "nodePort": "int32"},
    "K8sDeploymentSpec": {"replicas": "int32", "selector": "struct", "template": "K8sPodTemplate!"},
    "K8sPodTemplate": {"metadata": "K8sObjectMeta", "spec": "K8sPodSpec"},
    "K8sObjectMeta": {"labels": "map:string", "annotations": "map:string", "name": "string"},
    "K8sPodSpec": {"serviceAccountName": "string", "serviceAccount": "string", "containers": "[]K8sContainer"},
    "K8sContainer": {"name": "string", "image": "string", "ports": "[]K8sContainerPort"},
    "K8sContainerPort": {"containerPort": "port!", "name": "string", "protocol": "enum:TCP|UDP|SCTP"},
    "K8sServiceAccount": {},
    "K8sNamespaceSpec": {},
    # the body of a Secret (no spec): values are never echoed in findings ("struct" checks the shape only)
    "K8sSecret": {"type": "string", "data": "struct", "stringData": "struct", "immutable": "bool"},

    # ---- validated only (not served): EnvoyFilter, ProxyConfig, WasmPlugin, WorkloadGroup ------------------
    # networking/v1alpha3/envoy_filter.proto
    "EnvoyFilter": {"workloadSelector": "NetworkingWorkloadSelector", "targetRefs": "[]PolicyTargetReference",
                    "configPatches": "[]EnvoyConfigObjectPatch", "priority": "int32"},
    "EnvoyConfigObjectPatch": {
        "applyTo": "enum:INVALID|LISTENER|FILTER_CHAIN|NETWORK_FILTER|HTTP_FILTER|ROUTE_CONFIGURATION|VIRTUAL_HOST|"
                   "HTTP_ROUTE|CLUSTER|EXTENSION_CONFIG|BOOTSTRAP|LISTENER_FILTER",
        "match": "EnvoyConfigObjectMatch", "patch": "EnvoyPatch"},
    "EnvoyConfigObjectMatch": {"context": "enum:ANY|SIDECAR_INBOUND|SIDECAR_OUTBOUND|GATEWAY|WAYPOINT",
                               "proxy": "EnvoyProxyMatch", "listener": "EnvoyListenerMatch",
                               "routeConfiguration": "EnvoyRouteConfigurationMatch", "cluster": "EnvoyClusterMatch",
                               "waypoint": "EnvoyWaypointMatch"},
    "EnvoyProxyMatch": {"proxyVersion": "string", "metadata": "map:string"},
    "EnvoyListenerMatch": {"portNumber": "uint32", "portName": "string", "filterChain": "EnvoyFilterChainMatch",
                           "listenerFilter": "string", "name": "string"},
    "EnvoyFilterChainMatch": {"name": "string", "sni": "string", "transportProtocol": "string",
                              "applicationProtocols": "string", "filter": "EnvoyFilterMatch",
                              "destinationPort": "uint32", "transportSocket": "string"},
    "EnvoyFilterMatch": {"name": "string", "subFilter": "EnvoySubFilterMatch"},
    "EnvoySubFilterMatch": {"name": "string"},
    "EnvoyRouteConfigurationMatch": {"portNumber": "uint32", "portName": "string", "gateway": "string",
                                     "vhost": "EnvoyVirtualHostMatch", "name": "string"},
    "EnvoyVirtualHostMatch": {"name": "string", "domainName": "string", "route": "EnvoyRouteMatch"},
    "EnvoyRouteMatch": {"name": "string", "action": "enum:ANY|ROUTE|REDIRECT|DIRECT_RESPONSE"},
    "EnvoyClusterMatch": {"portNumber": "uint32", "service": "string", "subset": "string", "name": "string"},
    "EnvoyWaypointMatch": {"filter": "EnvoyFilterMatch", "route": "EnvoySubFilterMatch", "portNumber": "port"},
    "EnvoyPatch": {"operation": "enum:INVALID|MERGE|ADD|REMOVE|INSERT_BEFORE|INSERT_AFTER|INSERT_FIRST|REPLACE|"
                                "MERGE_AND_REPLACE_LIST",
                   "value": "struct", "filterClass": "enum:UNSPECIFIED|AUTHN|AUTHZ|STATS"},
    # networking/v1beta1/proxy_config.proto
    "ProxyConfig": {"selector": "WorkloadSelector", "concurrency": "int32", "environmentVariables": "map:string",
                    "image": "ProxyImage"},
    "ProxyImage": {"imageType": "string"},
    # extensions/v1alpha1/wasm.proto
    "WasmPlugin": {"selector": "WorkloadSelector", "targetRef": "PolicyTargetReference",
                   "targetRefs": "[]PolicyTargetReference", "url": "string!", "sha256": "string",
                   "imagePullPolicy": "enum:UNSPECIFIED_POLICY|IfNotPresent|Always", "imagePullSecret": "string",
                   "verificationKey": "string", "pluginConfig": "struct", "pluginName": "string",
                   "phase": "enum:UNSPECIFIED_PHASE|AUTHN|AUTHZ|STATS", "priority": "int32",
                   "failStrategy": "enum:FAIL_CLOSE|FAIL_OPEN|FAIL_RELOAD", "vmConfig": "VmConfig",
                   "match": "[]WasmPluginTrafficSelector", "type": "enum:UNSPECIFIED_PLUGIN_TYPE|HTTP|NETWORK"},
    "VmConfig": {"env": "[]WasmEnvVar"},
    "WasmEnvVar": {"name": "string!", "valueFrom": "enum:INLINE|HOST", "value": "string"},
    "WasmPluginTrafficSelector": {"mode": "enum:UNDEFINED|CLIENT|SERVER|CLIENT_AND_SERVER",
                                  "ports": "[]WasmPortSelector"},
    "WasmPortSelector": {"number": "port!"},
    # networking/v1alpha3/workload_group.proto
    # the template is a WorkloadEntry whose address is filled in when a workload registers (not required)
    "WorkloadGroup": {"metadata": "WorkloadGroupObjectMeta", "template": "WorkloadGroupTemplate!",
                      "probe": "ReadinessProbe"},
    "WorkloadGroupObjectMeta": {"labels": "map:string", "annotations": "map:string"},
    "ReadinessProbe": {"initialDelaySeconds": "int32", "timeoutSeconds": "int32", "periodSeconds": "int32",
                       "successThreshold": "int32", "failureThreshold": "int32", "httpGet": "HTTPHealthCheckConfig",
                       "tcpSocket": "TCPHealthCheckConfig", "exec": "ExecHealthCheckConfig",
                       "grpc": "GrpcHealthCheckConfig"},
    "HTTPHealthCheckConfig": {"path": "string", "port": "port!", "host": "string", "scheme": "string",
                              "httpHeaders": "[]HTTPHealthCheckHeader"},
    "HTTPHealthCheckHeader": {"name": "string", "value": "string"},
    "TCPHealthCheckConfig": {"host": "string", "port": "port!"},
    "ExecHealthCheckConfig": {"command": "[]string!"},
    "GrpcHealthCheckConfig": {"port": "port", "service": "string"},
}
# WorkloadGroup.template: a WorkloadEntry whose address is filled in when a workload registers (so its CRD
# does not require one)
MESSAGES["WorkloadGroupTemplate"] = MESSAGES["WorkloadEntry"]

# Messages where unknown fields are fine (Kubernetes objects: the mesh reads a few fields of a large API).
OPEN = frozenset({"K8sServiceSpec", "K8sServicePort", "K8sDeploymentSpec", "K8sPodTemplate", "K8sObjectMeta",
                  "K8sPodSpec", "K8sContainer", "K8sContainerPort", "K8sServiceAccount", "K8sNamespaceSpec",
                  "K8sSecret"})

# Protobuf oneofs (and Istio's "only one of" rules): at most one of each group may be set.
ONEOFS: dict[str, tuple[tuple[str, ...], ...]] = {
    "StringMatch": (("exact", "prefix", "regex"),),
    "HTTPRedirect": (("port", "derivePort"),),
    "HTTPBody": (("string", "bytes"),),
    "HTTPRewrite": (("uri", "uriRegexRewrite"),),
    "FaultDelay": (("fixedDelay", "exponentialDelay"),),
    "FaultAbort": (("httpStatus", "grpcStatus", "http2Error"),),
    "HTTPRoute": (("mirror", "mirrors"),),
    "LoadBalancerSettings": (("simple", "consistentHash"), ("warmupDurationSecs", "warmup"),
                             ("localityLbSetting", "zoneAwareLbSetting")),
    "ConsistentHashLB": (("httpHeaderName", "httpCookie", "useSourceIp", "httpQueryParameterName"),
                         ("ringHash", "maglev")),
    "LocalityLoadBalancerSetting": (("distribute", "failover"),),
    "ServiceEntry": (("endpoints", "workloadSelector"),),
    "JWTRule": (("jwks", "jwksUri", "jwks_uri"),),
    "AuthorizationPolicy": (("selector", "targetRef", "targetRefs"),),
    "RequestAuthentication": (("selector", "targetRef", "targetRefs"),),
    "Telemetry": (("selector", "targetRef", "targetRefs"),),
    "EnvoyFilter": (("workloadSelector", "targetRefs"),),
    "WasmPlugin": (("selector", "targetRef", "targetRefs"),),
    "ReadinessProbe": (("httpGet", "tcpSocket", "exec", "grpc"),),
    "CustomTag": (("literal", "environment", "header", "formatter"),),
    "MetricSelector": (("metric", "customMetric"),),
}

# Kind -> the message its `spec` is (Kubernetes kinds without a spec validate the whole body).
KIND_MESSAGE: dict[str, str] = {
    "VirtualService": "VirtualService", "DestinationRule": "DestinationRule", "Gateway": "Gateway",
    "ServiceEntry": "ServiceEntry", "Sidecar": "Sidecar", "WorkloadEntry": "WorkloadEntry",
    "PeerAuthentication": "PeerAuthentication", "AuthorizationPolicy": "AuthorizationPolicy",
    "RequestAuthentication": "RequestAuthentication", "Telemetry": "Telemetry", "IstioOperator": "IstioOperator",
    "Service": "K8sServiceSpec", "Deployment": "K8sDeploymentSpec", "Pod": "K8sPodSpec",
    "ServiceAccount": "K8sServiceAccount", "Namespace": "K8sNamespaceSpec", "Secret": "K8sSecret",
    "EnvoyFilter": "EnvoyFilter", "ProxyConfig": "ProxyConfig", "WasmPlugin": "WasmPlugin",
    "WorkloadGroup": "WorkloadGroup",
}

# Deprecated fields and enum values (Istio's proto comments): reported as IST0002 Deprecated, still honoured.
DEPRECATED_FIELDS: dict[tuple[str, str], str] = {
    ("HTTPRoute", "mirrorPercent"): "use mirrorPercentage instead",
    ("HTTPRoute", "mirror_percent"): "use mirrorPercentage instead",
    ("OutlierDetection", "consecutiveErrors"): "use consecutive5xxErrors (or consecutiveGatewayErrors) instead",
    ("LoadBalancerSettings", "warmupDurationSecs"): "use warmup.duration instead",
    ("ConsistentHashLB", "minimumRingSize"): "use ringHash.minimumRingSize instead",
    ("CorsPolicy", "allowOrigin"): "use allowOrigins instead",
    ("FaultDelay", "percent"): "use percentage instead",
    ("GatewayPort", "targetPort"): "it is ignored by Istio",
    ("OutboundTrafficPolicy", "egressProxy"): "it is ignored by Istio",
}
DEPRECATED_VALUES: dict[tuple[str, str, str], str] = {
    ("LoadBalancerSettings", "simple", "LEAST_CONN"): "LEAST_CONN is deprecated; use LEAST_REQUEST (same Envoy LB)",
}

# Fields Istio's API had once and removed: still seen in old YAML, ignored by Istio. Reported as IST0002 and
# dropped (not as unknown fields), with what replaced them.
OBSOLETE: dict[tuple[str, str], str] = {
    ("HTTPRoute", "websocketUpgrade"): "removed from Istio's API; WebSocket upgrades are always allowed",
    ("HTTPRoute", "appendHeaders"): "removed from Istio's API; use headers.request.add",
    ("HTTPRoute", "removeResponseHeaders"): "removed from Istio's API; use headers.response.remove",
    ("HTTPRoute", "appendResponseHeaders"): "removed from Istio's API; use headers.response.add",
    ("HTTPRoute", "removeRequestHeaders"): "removed from Istio's API; use headers.request.remove",
    ("HTTPRoute", "appendRequestHeaders"): "removed from Istio's API; use headers.request.add",
}

# Istio fields this project accepts and validates but does not translate yet: a Warning finding names each
# one used (PYM0004) so nothing is dropped silently. Keep in step with control/translate/ (mirror, CORS and
# warmup are translated: control/translate/routes.py, clusters.py).
UNSUPPORTED: dict[tuple[str, str], str] = {
    ("HTTPRoute", "delegate"): "VirtualService delegation",
    ("TrafficPolicy", "tunnel"): "HTTP CONNECT tunnelling",
    ("TrafficPolicy", "proxyProtocol"): "PROXY protocol",
    ("TrafficPolicy", "retryBudget"): "retry budgets",
    ("LoadBalancerSettings", "localityLbSetting"): "locality load balancing",
    ("IstioIngressListener", "captureMode"): "capture modes (outbound capture is explicit)",
    ("WorkloadEntry", "network"): "multi-network",
    ("AuthorizationPolicy", "provider"): "CUSTOM (ext_authz) authorization",
    ("Tracing", "useRequestIdForTraceSampling"): "request-id based sampling",
    ("HTTPSettings", "http2KeepAlive"): "HTTP/2 keepalive PINGs to upstreams",
    ("LoadBalancerSettings", "backendUtilization"): "client-side weighted round robin (ORCA backend utilization)",
    ("LoadBalancerSettings", "zoneAwareLbSetting"): "zone-aware load balancing",
    ("OutlierDetection", "outlierDetectionHttpErrorCodes"): "custom outlier-detection error codes",
    ("ServerTLSSettings", "caCertCredentialName"): "a separate CA credential for client certificates",
    ("ServerTLSSettings", "ecdhCurves"): "ECDH curve selection",
    ("ServerTLSSettings", "insecureSkipVerify"): "skipping client certificate verification",
    ("JWTRule", "presence"): "JWT presence (REQUIRED tokens are not enforced by RequestAuthentication here)",
    ("JWTRule", "jwks_uri"): "the jwks_uri spelling (use jwksUri)",
    ("HTTPRoute", "mirror_percent"): "the mirror_percent spelling (use mirrorPercentage)",
    ("HTTPRedirect", "prefixRewrite"): "redirect prefix rewriting",
}

# Istio's port protocols (pkg/config/protocol: Parse is case-insensitive).
PROTOCOLS = frozenset({"HTTP", "HTTPS", "GRPC", "GRPC-WEB", "HTTP2", "HTTP_PROXY", "MONGO", "MYSQL", "REDIS",
                       "TCP", "TLS", "UDP", "THRIFT", "HBONE"})

# retryOn tokens Istio accepts (pkg/config/validation: supportedRetryOnPolicies); integers that are HTTP
# statuses are accepted too.
RETRY_ON = frozenset({
    "5xx", "gateway-error", "reset", "reset-before-request", "connect-failure", "retriable-4xx", "refused-stream",
    "retriable-status-codes", "retriable-headers", "envoy-ratelimited", "http3-post-connect-failure",
    "cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable"})

GRPC_STATUSES = frozenset({
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
    "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
    "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"})

# IstioOperator built-in profiles (istio/istio manifests/profiles/*.yaml).
PROFILES = frozenset({"default", "demo", "minimal", "remote", "empty", "preview", "ambient", "openshift",
                      "openshift-ambient", "stable"})
