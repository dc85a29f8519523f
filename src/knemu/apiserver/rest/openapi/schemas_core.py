"""OpenAPI schemas of the core/v1 kinds knemu serves (see ``schemas.py``)."""

from __future__ import annotations

from knemu.apiserver.rest.openapi.schemas import (
    CORE,
    INTSTR,
    META,
    QUANTITY,
    TIME,
    Schema,
    array,
    boolean,
    free,
    integer,
    list_of,
    obj,
    ref,
    string,
    string_map,
    strings,
    top,
)

PROTOCOL = string("The protocol: TCP, UDP or SCTP. Defaults to TCP.", ("SCTP", "TCP", "UDP"))


def _probe() -> Schema:
    return obj(
        "Probe describes a health check to be performed against a container.",
        {
            "exec": obj("Run a command in the container.", {"command": strings("The command.")}),
            "httpGet": obj(
                "An HTTP GET request to the pod's IP.",
                {
                    "path": string("Path to access on the HTTP server."),
                    "port": ref(INTSTR, "Number or name of the port to access."),
                    "host": string("Host name to connect to, defaults to the pod IP."),
                    "scheme": string("Scheme to use for connecting.", ("HTTP", "HTTPS")),
                    "httpHeaders": array(free("A header name and value."), "Custom headers."),
                },
                ("port",),
            ),
            "tcpSocket": obj(
                "A TCP connection to the pod's IP.",
                {"port": ref(INTSTR, "Port to connect to."), "host": string("Host to use.")},
                ("port",),
            ),
            "grpc": free("A gRPC health check (accepted, not run by knemu)."),
            "initialDelaySeconds": integer("Seconds after the container started before probes."),
            "periodSeconds": integer("How often (in seconds) to perform the probe."),
            "timeoutSeconds": integer("Seconds after which the probe times out."),
            "successThreshold": integer("Consecutive successes to count as success."),
            "failureThreshold": integer("Consecutive failures to count as failure."),
            "terminationGracePeriodSeconds": integer("Grace period on probe failure.", "int64"),
        },
    )


def _container() -> Schema:
    return obj(
        "A single application container that you want to run within a pod.",
        {
            "name": string("Name of the container, a DNS_LABEL unique in the pod."),
            "image": string("Container image name."),
            "imagePullPolicy": string("Image pull policy.", ("Always", "IfNotPresent", "Never")),
            "command": strings("Entrypoint array. Not executed within a shell."),
            "args": strings("Arguments to the entrypoint."),
            "workingDir": string("Container's working directory."),
            "ports": array(
                ref(CORE + "ContainerPort"),
                "List of ports to expose from the container.",
                merge_key="containerPort",
            ),
            "env": array(
                ref(CORE + "EnvVar"),
                "Environment variables to set in the container.",
                merge_key="name",
            ),
            "envFrom": array(
                free("A ConfigMap or Secret to take variables from."),
                "Sources to populate environment variables in the container.",
            ),
            "resources": obj(
                "Compute resources required by this container.",
                {
                    "limits": {
                        "type": "object",
                        "additionalProperties": {"$ref": "#/definitions/" + QUANTITY},
                        "description": "Maximum compute resources.",
                    },
                    "requests": {
                        "type": "object",
                        "additionalProperties": {"$ref": "#/definitions/" + QUANTITY},
                        "description": "Minimum compute resources.",
                    },
                },
            ),
            "volumeMounts": array(
                free("A volume mounted into the container."),
                "Pod volumes to mount.",
                merge_key="mountPath",
            ),
            "livenessProbe": ref(CORE + "Probe", "The container is restarted if this fails."),
            "readinessProbe": ref(CORE + "Probe", "Removed from service endpoints if it fails."),
            "startupProbe": ref(CORE + "Probe", "Other probes wait until this succeeds."),
            "lifecycle": free("Actions taken in response to container lifecycle events."),
            "securityContext": free("Security options the container should be run with."),
            "stdin": boolean("Allocate a buffer for stdin in the container runtime."),
            "stdinOnce": boolean("Close stdin after the first attach session ends."),
            "tty": boolean("Allocate a TTY for the container."),
            "terminationMessagePath": string("Path of the container's termination message."),
            "terminationMessagePolicy": string(
                "How the termination message is populated.", ("FallbackToLogsOnError", "File")
            ),
        },
        ("name",),
    )


def _pod_spec() -> Schema:
    return obj(
        "PodSpec is a description of a pod.",
        {
            "containers": array(
                ref(CORE + "Container"), "Containers belonging to the pod.", merge_key="name"
            ),
            "initContainers": array(
                ref(CORE + "Container"),
                "Run in order before the containers start.",
                merge_key="name",
            ),
            "restartPolicy": string(
                "Restart policy for all containers within the pod.",
                ("Always", "Never", "OnFailure"),
            ),
            "terminationGracePeriodSeconds": integer(
                "Seconds the pod needs to terminate gracefully.", "int64"
            ),
            "activeDeadlineSeconds": integer("Seconds the pod may be active.", "int64"),
            "dnsPolicy": string(
                "DNS policy for the pod.",
                ("ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"),
            ),
            "dnsConfig": obj(
                "DNS parameters of a pod, merged with those generated from dnsPolicy.",
                {
                    "nameservers": strings("DNS name server IP addresses."),
                    "searches": strings("DNS search domains for host-name lookup."),
                    "options": array(free("A resolver option: name and value."), "Options."),
                },
            ),
            "nodeSelector": string_map("Labels a node must have for the pod to fit on it."),
            "nodeName": string("Schedules the pod onto this node directly."),
            "hostNetwork": boolean("Use the node's network namespace."),
            "hostname": string("The pod's hostname; defaults to the pod name."),
            "subdomain": string("The pod's subdomain: <hostname>.<subdomain>.<ns>.svc."),
            "serviceAccountName": string("Name of the ServiceAccount to run this pod as."),
            "serviceAccount": string("Deprecated alias of serviceAccountName."),
            "automountServiceAccountToken": boolean("Whether a token is mounted."),
            "tolerations": array(
                obj(
                    "The pod tolerates any taint that matches the triple <key,value,effect>.",
                    {
                        "key": string("The taint key that the toleration applies to."),
                        "operator": string("Relationship to the value.", ("Equal", "Exists")),
                        "value": string("The taint value the toleration matches to."),
                        "effect": string(
                            "The taint effect to match.",
                            ("NoExecute", "NoSchedule", "PreferNoSchedule"),
                        ),
                        "tolerationSeconds": integer(
                            "How long a NoExecute taint is tolerated.", "int64"
                        ),
                    },
                ),
                "The pod's tolerations.",
            ),
            "volumes": array(
                free("A named volume that containers can mount."),
                "Volumes that can be mounted by containers.",
                merge_key="name",
            ),
            "affinity": free("Scheduling constraints (accepted; knemu's scheduler spreads)."),
            "securityContext": free("Pod-level security attributes."),
            "priorityClassName": string("The pod's priority class."),
            "schedulerName": string("The scheduler to dispatch the pod."),
            "enableServiceLinks": boolean("Inject service environment variables."),
            "shareProcessNamespace": boolean("Share one process namespace among containers."),
            "imagePullSecrets": array(
                free("A reference to a Secret."), "Pull secrets.", merge_key="name"
            ),
        },
        ("containers",),
    )


def _service_spec() -> Schema:
    return obj(
        "ServiceSpec describes the attributes that a user creates on a service.",
        {
            "type": string(
                "How the Service is exposed.",
                ("ClusterIP", "ExternalName", "LoadBalancer", "NodePort"),
            ),
            "selector": string_map("Route traffic to pods with labels matching this selector."),
            "ports": array(
                ref(CORE + "ServicePort"), "The ports exposed by this service.", merge_key="port"
            ),
            "clusterIP": string("The IP address of the service, allocated from the service CIDR."),
            "clusterIPs": strings("IP addresses of the service (the first is clusterIP)."),
            "externalIPs": strings("IP addresses for which nodes also accept traffic."),
            "externalName": string("The DNS name a Service of type ExternalName maps to."),
            "externalTrafficPolicy": string(
                "Whether external traffic keeps node-local endpoints only.", ("Cluster", "Local")
            ),
            "internalTrafficPolicy": string(
                "Whether cluster traffic keeps node-local endpoints only.", ("Cluster", "Local")
            ),
            "sessionAffinity": string("Client IP based session affinity.", ("ClientIP", "None")),
            "sessionAffinityConfig": obj(
                "Configuration of session affinity.",
                {
                    "clientIP": obj(
                        "ClientIP affinity.",
                        {
                            "timeoutSeconds": integer("Seconds a client sticks (default 10800)."),
                        },
                    ),
                },
            ),
            "loadBalancerIP": string("Deprecated: a requested load balancer address."),
            "loadBalancerSourceRanges": strings("Client CIDRs a load balancer admits."),
            "ipFamilies": strings("IP families (IPv4) of this service."),
            "ipFamilyPolicy": string(
                "Dual-stack policy.", ("PreferDualStack", "RequireDualStack", "SingleStack")
            ),
            "publishNotReadyAddresses": boolean("Publish endpoints of pods that are not ready."),
            "allocateLoadBalancerNodePorts": boolean("Allocate NodePorts for LoadBalancers."),
            "healthCheckNodePort": integer("Health check port for externalTrafficPolicy Local."),
        },
    )


CORE_TYPES: dict[str, Schema] = {
    CORE + "Probe": _probe(),
    CORE + "Container": _container(),
    CORE + "PodSpec": _pod_spec(),
    CORE + "ContainerPort": obj(
        "A network port in a single container.",
        {
            "containerPort": integer("Port number on the pod's IP address (1-65535)."),
            "name": string("An IANA_SVC_NAME unique within the pod; services refer to it."),
            "protocol": PROTOCOL,
            "hostPort": integer("Port number to expose on the node (the CNI portmap plugin)."),
            "hostIP": string("Node IP to bind the host port to."),
        },
        ("containerPort",),
    ),
    CORE + "EnvVar": obj(
        "An environment variable present in a container.",
        {
            "name": string("Name of the environment variable."),
            "value": string("Value; $(VAR_NAME) references are expanded."),
            "valueFrom": free("Source for the value (a ConfigMap/Secret key, a field)."),
        },
        ("name",),
    ),
    CORE + "Pod": top(
        "Pod is a collection of containers that can run on a host.",
        "",
        "v1",
        "Pod",
        {
            "spec": ref(CORE + "PodSpec", "Specification of the desired behavior of the pod."),
            "status": free("Most recently observed status of the pod (set by the node)."),
        },
    ),
    CORE + "PodTemplateSpec": obj(
        "Describes the data a pod should have when created from a template.",
        {
            "metadata": ref(META + "ObjectMeta", "Standard object's metadata."),
            "spec": ref(CORE + "PodSpec", "Specification of the desired behavior of the pod."),
        },
    ),
    CORE + "ServicePort": obj(
        "ServicePort contains information on service's port.",
        {
            "name": string("The name of this port within the service (DNS_LABEL)."),
            "protocol": PROTOCOL,
            "port": integer("The port that will be exposed by this service."),
            "targetPort": ref(INTSTR, "Number or name of the port on the pods."),
            "nodePort": integer("The port on each node (NodePort, LoadBalancer)."),
            "appProtocol": string("The application protocol for this port."),
        },
        ("port",),
    ),
    CORE + "ServiceSpec": _service_spec(),
    CORE + "Service": top(
        "A named abstraction of software service, with a virtual IP and port(s).",
        "",
        "v1",
        "Service",
        {
            "spec": ref(CORE + "ServiceSpec", "Behavior of a service."),
            "status": free("Most recently observed status of the service."),
        },
    ),
    CORE + "Namespace": top(
        "Namespace provides a scope for names.",
        "",
        "v1",
        "Namespace",
        {
            "spec": obj("Spec of a namespace.", {"finalizers": strings("Finalizers.")}),
            "status": free("Status of the namespace (phase)."),
        },
    ),
    CORE + "Node": top(
        "Node is a worker node: here a network namespace or container with a knemu agent.",
        "",
        "v1",
        "Node",
        {
            "spec": obj(
                "Spec of a node.",
                {
                    "podCIDR": string("The pod IP range assigned to the node."),
                    "podCIDRs": strings("The pod IP ranges assigned to the node."),
                    "unschedulable": boolean("Controls node schedulability of new pods."),
                    "taints": array(free("A taint: key, value, effect."), "The node's taints."),
                    "providerID": string("ID of the node assigned by the cloud provider."),
                },
            ),
            "status": free("Most recently observed status of the node."),
        },
    ),
    CORE + "Endpoints": top(
        "Endpoints is a collection of endpoints that implement the actual service.",
        "",
        "v1",
        "Endpoints",
        {"subsets": array(free("Addresses and ports."), "The endpoint subsets.")},
    ),
    CORE + "Event": top(
        "Event is a report of an event somewhere in the cluster.",
        "",
        "v1",
        "Event",
        {
            "involvedObject": free("The object this event is about."),
            "reason": string("Short, machine understandable status of the transition."),
            "message": string("A human-readable description of the status of this operation."),
            "type": string("Type of this event.", ("Normal", "Warning")),
            "count": integer("The number of times this event has occurred."),
            "firstTimestamp": TIME,
            "lastTimestamp": TIME,
            "eventTime": string("Time when this Event was first observed.", fmt="date-time"),
            "source": free("The component reporting this event."),
            "reportingComponent": string("Name of the controller that emitted this Event."),
            "reportingInstance": string("ID of the controller instance."),
        },
    ),
}

CORE_TYPES.update(
    {
        CORE + kind + "List": list_of(CORE + kind, "", "v1", kind + "List")
        for kind in ("Pod", "Service", "Namespace", "Node", "Endpoints", "Event")
    }
)
