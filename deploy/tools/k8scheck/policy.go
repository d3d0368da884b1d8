package main

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

const (
	componentLabel = "app.kubernetes.io/component"
	// chainerReplicas: one active chainer and one hot standby.
	chainerReplicas = 2
	readinessPath   = "/readyz"
	livenessPath    = "/livez"
)

// workload is a pod template and where it comes from.
type workload struct {
	ref       string
	component string
	template  *corev1.PodTemplateSpec
	// serving: a long-running process that must answer the orchestrator's probes.
	serving bool
}

// policy holds the decoded stream and checks the project's own rules on it.
type policy struct {
	objects    []object
	envNames   map[string]bool
	required   []string
	workloads  []workload
	configMaps map[string]*corev1.ConfigMap
	services   []*corev1.Service
	problems   []string
}

func newPolicy(objects []object, envNames map[string]bool, required []string) *policy {
	p := &policy{objects: objects, envNames: envNames, required: required, configMaps: map[string]*corev1.ConfigMap{}}
	for _, o := range objects {
		switch body := o.body.(type) {
		case *appsv1.Deployment:
			p.workloads = append(p.workloads, workload{
				ref: o.ref, component: component(body.ObjectMeta, body.Spec.Template.ObjectMeta),
				template: &body.Spec.Template, serving: true,
			})
		case *batchv1.CronJob:
			template := &body.Spec.JobTemplate.Spec.Template
			p.workloads = append(p.workloads, workload{
				ref: o.ref, component: component(body.ObjectMeta, template.ObjectMeta), template: template,
			})
		case *batchv1.Job:
			p.workloads = append(p.workloads, workload{
				ref: o.ref, component: component(body.ObjectMeta, body.Spec.Template.ObjectMeta),
				template: &body.Spec.Template,
			})
		case *corev1.ConfigMap:
			p.configMaps[body.Name] = body
		case *corev1.Service:
			p.services = append(p.services, body)
		}
	}
	return p
}

func component(meta, podMeta metav1.ObjectMeta) string {
	if value := podMeta.Labels[componentLabel]; value != "" {
		return value
	}
	return meta.Labels[componentLabel]
}

func (p *policy) addf(ref, format string, args ...any) {
	p.problems = append(p.problems, ref+": "+fmt.Sprintf(format, args...))
}

func (p *policy) check() []string {
	components := map[string]int{}
	for _, o := range p.objects {
		p.checkMeta(o)
		switch body := o.body.(type) {
		case *corev1.Secret:
			p.addf(o.ref, "holds a Secret: the manifests reference secrets and never contain them")
		case *appsv1.Deployment:
			p.checkDeployment(o.ref, body)
		case *batchv1.CronJob:
			p.checkCronJob(o.ref, body)
		case *batchv1.Job:
			p.checkJob(o.ref, &body.Spec)
		case *corev1.Service:
			p.checkService(o.ref, body)
		case *monitoringv1.ServiceMonitor:
			p.checkServiceMonitor(o.ref, body)
		case *networkingv1.NetworkPolicy:
			p.checkSelects(o.ref, "spec.podSelector", &body.Spec.PodSelector)
		case *policyv1.PodDisruptionBudget:
			p.checkSelects(o.ref, "spec.selector", body.Spec.Selector)
		}
	}
	for _, w := range p.workloads {
		components[w.component]++
		p.checkPod(w)
	}
	for _, name := range p.required {
		if components[name] == 0 {
			p.addf("stream", "no workload whose %s label is %q", componentLabel, name)
		}
	}
	return p.problems
}

// checkMeta: the base is namespace-agnostic (the namespace is chosen by an overlay or -n).
func (p *policy) checkMeta(o object) {
	type namespaced interface{ GetNamespace() string }
	if meta, ok := o.body.(namespaced); ok && meta.GetNamespace() != "" {
		p.addf(o.ref, "metadata.namespace is %q: the base must not pin a namespace", meta.GetNamespace())
	}
}

func (p *policy) checkDeployment(ref string, d *appsv1.Deployment) {
	p.checkSelectorMatchesTemplate(ref, d.Spec.Selector, &d.Spec.Template)
	if component(d.ObjectMeta, d.Spec.Template.ObjectMeta) != "chainer" {
		return
	}
	if d.Spec.Replicas == nil || *d.Spec.Replicas != chainerReplicas {
		p.addf(ref, "spec.replicas must be %d (one active chainer, one hot standby), found %s",
			chainerReplicas, intPointer(d.Spec.Replicas))
	}
	// A rolling update with a surge would run three chainers at once; with maxSurge 0 the
	// old standby is replaced first and the active one last.
	switch d.Spec.Strategy.Type {
	case appsv1.RecreateDeploymentStrategyType:
	case appsv1.RollingUpdateDeploymentStrategyType:
		rolling := d.Spec.Strategy.RollingUpdate
		if rolling == nil || rolling.MaxSurge == nil || !isZero(*rolling.MaxSurge) {
			p.addf(ref, "spec.strategy.rollingUpdate.maxSurge must be 0, so an update never runs %d chainers",
				chainerReplicas+1)
		}
		if rolling != nil && rolling.MaxUnavailable != nil && isZero(*rolling.MaxUnavailable) {
			p.addf(ref, "spec.strategy.rollingUpdate.maxUnavailable must be 1 when maxSurge is 0")
		}
	default:
		p.addf(ref, "spec.strategy.type must be RollingUpdate with maxSurge 0 (or Recreate), found %q",
			d.Spec.Strategy.Type)
	}
}

func (p *policy) checkCronJob(ref string, c *batchv1.CronJob) {
	if c.Spec.ConcurrencyPolicy != batchv1.ForbidConcurrent {
		p.addf(ref, "spec.concurrencyPolicy must be Forbid, found %q", c.Spec.ConcurrencyPolicy)
	}
	p.checkJob(ref, &c.Spec.JobTemplate.Spec)
}

func (p *policy) checkJob(ref string, job *batchv1.JobSpec) {
	if job.BackoffLimit == nil || *job.BackoffLimit != 0 {
		p.addf(ref, "the job's backoffLimit must be 0 (a failed check is a finding, not a retry)")
	}
	if restart := job.Template.Spec.RestartPolicy; restart != corev1.RestartPolicyNever {
		p.addf(ref, "the job's restartPolicy must be Never, found %q", restart)
	}
	p.checkSelectorMatchesTemplate(ref, job.Selector, &job.Template)
}

func (p *policy) checkSelectorMatchesTemplate(ref string, selector *metav1.LabelSelector, t *corev1.PodTemplateSpec) {
	if selector == nil {
		return
	}
	s, err := metav1.LabelSelectorAsSelector(selector)
	if err != nil {
		p.addf(ref, "spec.selector: %v", err)
		return
	}
	if s.Empty() || !s.Matches(labels.Set(t.Labels)) {
		p.addf(ref, "spec.selector %q does not select the pod template's labels %v", s.String(), t.Labels)
	}
}

func (p *policy) checkPod(w workload) {
	pod := &w.template.Spec
	ref := w.ref
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		p.addf(ref, "spec.automountServiceAccountToken must be false (the processes never call the API server)")
	}
	if pod.ServiceAccountName == "" {
		p.addf(ref, "spec.serviceAccountName is not set (the namespace's default account would be used)")
	}
	if pod.HostNetwork || pod.HostPID || pod.HostIPC {
		p.addf(ref, "must not share the host's network, PID or IPC namespace")
	}
	podSC := pod.SecurityContext
	if podSC == nil {
		podSC = &corev1.PodSecurityContext{}
		p.addf(ref, "spec.securityContext is missing")
	}
	if podSC.RunAsNonRoot == nil || !*podSC.RunAsNonRoot {
		p.addf(ref, "spec.securityContext.runAsNonRoot must be true")
	}
	if podSC.RunAsUser == nil || *podSC.RunAsUser == 0 {
		p.addf(ref, "spec.securityContext.runAsUser must be a fixed non-zero UID")
	}
	if podSC.RunAsGroup == nil || *podSC.RunAsGroup == 0 {
		p.addf(ref, "spec.securityContext.runAsGroup must be a fixed non-zero GID")
	}
	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		volumes[v.Name] = v
		if v.HostPath != nil {
			p.addf(ref, "volume %q is a hostPath", v.Name)
		}
		if v.ConfigMap != nil {
			p.checkConfigMapRef(ref, "volume "+v.Name, v.ConfigMap.Name, "", v.ConfigMap.Optional)
		}
	}
	all := slices.Concat(pod.InitContainers, pod.Containers)
	if len(pod.Containers) == 0 {
		p.addf(ref, "has no containers")
	}
	for i := range all {
		c := &all[i]
		cref := fmt.Sprintf("%s: container %q", ref, c.Name)
		p.checkContainerSecurity(cref, podSC, c.SecurityContext)
		p.checkResources(cref, c.Resources)
		p.checkImage(cref, c.Image)
		p.checkEnv(cref, c)
		for _, mount := range c.VolumeMounts {
			if _, ok := volumes[mount.Name]; !ok {
				p.problems = append(p.problems, fmt.Sprintf("%s: mounts volume %q, which the pod does not define", cref, mount.Name))
			}
		}
		if w.serving && i >= len(pod.InitContainers) {
			p.checkProbes(cref, c)
		}
	}
}

func (p *policy) checkContainerSecurity(cref string, podSC *corev1.PodSecurityContext, sc *corev1.SecurityContext) {
	add := func(format string, args ...any) {
		p.problems = append(p.problems, cref+": "+fmt.Sprintf(format, args...))
	}
	if sc == nil {
		add("securityContext is missing")
		sc = &corev1.SecurityContext{}
	}
	if nonRoot := firstBool(sc.RunAsNonRoot, podSC.RunAsNonRoot); nonRoot == nil || !*nonRoot {
		add("securityContext.runAsNonRoot must be true (here or in the pod's securityContext)")
	}
	if sc.RunAsUser != nil && *sc.RunAsUser == 0 {
		add("securityContext.runAsUser is 0 (root)")
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		add("securityContext.readOnlyRootFilesystem must be true")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		add("securityContext.allowPrivilegeEscalation must be false")
	}
	if sc.Privileged != nil && *sc.Privileged {
		add("securityContext.privileged must not be true")
	}
	if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, corev1.Capability("ALL")) {
		add("securityContext.capabilities.drop must contain ALL")
	}
	if sc.Capabilities != nil && len(sc.Capabilities.Add) > 0 {
		add("securityContext.capabilities.add must be empty, found %v", sc.Capabilities.Add)
	}
	seccomp := sc.SeccompProfile
	if seccomp == nil {
		seccomp = podSC.SeccompProfile
	}
	if seccomp == nil || (seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault && seccomp.Type != corev1.SeccompProfileTypeLocalhost) {
		add("seccompProfile must be RuntimeDefault (or Localhost), here or in the pod's securityContext")
	}
}

func (p *policy) checkResources(cref string, r corev1.ResourceRequirements) {
	for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if _, ok := r.Requests[name]; !ok {
			p.problems = append(p.problems, fmt.Sprintf("%s: resources.requests.%s is not set", cref, name))
		}
	}
	if _, ok := r.Limits[corev1.ResourceMemory]; !ok {
		p.problems = append(p.problems, cref+": resources.limits.memory is not set")
	}
	for name, limit := range r.Limits {
		if request, ok := r.Requests[name]; ok && request.Cmp(limit) > 0 {
			p.problems = append(p.problems, fmt.Sprintf("%s: resources.requests.%s (%s) exceeds its limit (%s)",
				cref, name, request.String(), limit.String()))
		}
	}
}

func (p *policy) checkImage(cref, image string) {
	if image == "" {
		p.problems = append(p.problems, cref+": image is not set")
		return
	}
	last := image[strings.LastIndex(image, "/")+1:]
	switch {
	case strings.Contains(last, "@"):
	case !strings.Contains(last, ":"):
		p.problems = append(p.problems, cref+": image "+image+" has no tag (it means latest): pin a version or digest")
	case strings.HasSuffix(last, ":latest"):
		p.problems = append(p.problems, cref+": image "+image+" uses the tag latest: pin a version or digest")
	}
}

func (p *policy) checkEnv(cref string, c *corev1.Container) {
	check := func(name, from string) {
		if len(p.envNames) > 0 && strings.HasPrefix(name, "BALDUR_") && !p.envNames[name] {
			p.problems = append(p.problems, fmt.Sprintf("%s: %s sets %s, which is not a known baldur-audit variable", cref, from, name))
		}
	}
	for _, env := range c.Env {
		check(env.Name, "env")
		if env.ValueFrom != nil && env.ValueFrom.ConfigMapKeyRef != nil {
			ref := env.ValueFrom.ConfigMapKeyRef
			p.checkConfigMapRef(cref, "env "+env.Name, ref.Name, ref.Key, ref.Optional)
		}
	}
	for _, from := range c.EnvFrom {
		if from.ConfigMapRef == nil {
			continue
		}
		name := from.ConfigMapRef.Name
		p.checkConfigMapRef(cref, "envFrom", name, "", from.ConfigMapRef.Optional)
		if cm, ok := p.configMaps[name]; ok {
			for key := range cm.Data {
				check(from.Prefix+key, "envFrom ConfigMap "+name)
			}
		}
	}
}

func (p *policy) checkConfigMapRef(cref, what, name, key string, optional *bool) {
	if optional != nil && *optional {
		return
	}
	cm, ok := p.configMaps[name]
	if !ok {
		p.problems = append(p.problems, fmt.Sprintf("%s: %s refers to ConfigMap %q, which the stream does not hold", cref, what, name))
		return
	}
	if _, ok := cm.Data[key]; key != "" && !ok {
		p.problems = append(p.problems, fmt.Sprintf("%s: %s refers to key %q of ConfigMap %q, which it lacks", cref, what, key, name))
	}
}

func (p *policy) checkProbes(cref string, c *corev1.Container) {
	probe := func(field, path string, pr *corev1.Probe) {
		if pr == nil || pr.HTTPGet == nil {
			p.problems = append(p.problems, fmt.Sprintf("%s: %s must be an httpGet probe of %s", cref, field, path))
			return
		}
		if pr.HTTPGet.Path != path {
			p.problems = append(p.problems, fmt.Sprintf("%s: %s.httpGet.path must be %s, found %q", cref, field, path, pr.HTTPGet.Path))
		}
		if !containerHasPort(c, pr.HTTPGet.Port) {
			p.problems = append(p.problems, fmt.Sprintf("%s: %s.httpGet.port %s is not one of the container's ports",
				cref, field, pr.HTTPGet.Port.String()))
		}
	}
	probe("readinessProbe", readinessPath, c.ReadinessProbe)
	probe("livenessProbe", livenessPath, c.LivenessProbe)
}

func (p *policy) checkService(ref string, s *corev1.Service) {
	if len(s.Spec.Selector) == 0 {
		p.addf(ref, "spec.selector is empty")
		return
	}
	selected := p.selectedPods(labels.SelectorFromSet(s.Spec.Selector))
	if len(selected) == 0 {
		p.addf(ref, "spec.selector %v selects no pod template of the stream", s.Spec.Selector)
		return
	}
	for _, port := range s.Spec.Ports {
		target := port.TargetPort
		if target.Type == intstr.Int && target.IntVal == 0 {
			target = intstr.FromInt32(port.Port)
		}
		for _, w := range selected {
			if !podHasPort(&w.template.Spec, target) {
				p.addf(ref, "port %q targets %s, which %s does not declare", port.Name, target.String(), w.ref)
			}
		}
	}
}

func (p *policy) checkServiceMonitor(ref string, m *monitoringv1.ServiceMonitor) {
	selector, err := metav1.LabelSelectorAsSelector(&m.Spec.Selector)
	if err != nil {
		p.addf(ref, "spec.selector: %v", err)
		return
	}
	var matched []*corev1.Service
	for _, s := range p.services {
		if !selector.Empty() && selector.Matches(labels.Set(s.Labels)) {
			matched = append(matched, s)
		}
	}
	if len(matched) == 0 {
		p.addf(ref, "spec.selector %q selects no Service of the stream", selector.String())
		return
	}
	if len(m.Spec.Endpoints) == 0 {
		p.addf(ref, "spec.endpoints is empty")
	}
	for _, endpoint := range m.Spec.Endpoints {
		for _, s := range matched {
			found := false
			for _, port := range s.Spec.Ports {
				found = found || port.Name == endpoint.Port
			}
			if !found {
				p.addf(ref, "endpoint port %q is not a port name of Service/%s", endpoint.Port, s.Name)
			}
		}
	}
}

func (p *policy) checkSelects(ref, field string, selector *metav1.LabelSelector) {
	if selector == nil {
		p.addf(ref, "%s is missing", field)
		return
	}
	s, err := metav1.LabelSelectorAsSelector(selector)
	if err != nil {
		p.addf(ref, "%s: %v", field, err)
		return
	}
	if len(p.selectedPods(s)) == 0 {
		p.addf(ref, "%s %q selects no pod template of the stream", field, s.String())
	}
}

func (p *policy) selectedPods(s labels.Selector) []workload {
	var selected []workload
	for _, w := range p.workloads {
		if !s.Empty() && s.Matches(labels.Set(w.template.Labels)) {
			selected = append(selected, w)
		}
	}
	sort.Slice(selected, func(i, j int) bool { return selected[i].ref < selected[j].ref })
	return selected
}

func containerHasPort(c *corev1.Container, port intstr.IntOrString) bool {
	for _, declared := range c.Ports {
		if (port.Type == intstr.String && declared.Name == port.StrVal) ||
			(port.Type == intstr.Int && declared.ContainerPort == port.IntVal) {
			return true
		}
	}
	return false
}

func podHasPort(pod *corev1.PodSpec, port intstr.IntOrString) bool {
	for i := range pod.Containers {
		if containerHasPort(&pod.Containers[i], port) {
			return true
		}
	}
	return false
}

func firstBool(values ...*bool) *bool {
	for _, v := range values {
		if v != nil {
			return v
		}
	}
	return nil
}

func isZero(v intstr.IntOrString) bool {
	return (v.Type == intstr.Int && v.IntVal == 0) || (v.Type == intstr.String && (v.StrVal == "0" || v.StrVal == "0%"))
}

func intPointer(v *int32) string {
	if v == nil {
		return "none (the default, 1)"
	}
	return fmt.Sprint(*v)
}
