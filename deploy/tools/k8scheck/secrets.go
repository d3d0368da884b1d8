package main

import (
	"fmt"
	"sort"

	corev1 "k8s.io/api/core/v1"
)

// secretRef is one reference of a workload to a Secret (key "" for the whole Secret).
type secretRef struct {
	workload string
	secret   string
	key      string
	optional bool
}

func (p *policy) secretRefs() []secretRef {
	var refs []secretRef
	for _, w := range p.workloads {
		pod := &w.template.Spec
		for _, v := range pod.Volumes {
			if v.Secret != nil {
				refs = append(refs, secretRef{w.ref, v.Secret.SecretName, "", isTrue(v.Secret.Optional)})
			}
		}
		for _, c := range append(append([]corev1.Container{}, pod.InitContainers...), pod.Containers...) {
			for _, env := range c.Env {
				if env.ValueFrom != nil && env.ValueFrom.SecretKeyRef != nil {
					ref := env.ValueFrom.SecretKeyRef
					refs = append(refs, secretRef{w.ref, ref.Name, ref.Key, isTrue(ref.Optional)})
				}
			}
			for _, from := range c.EnvFrom {
				if from.SecretRef != nil {
					refs = append(refs, secretRef{w.ref, from.SecretRef.Name, "", isTrue(from.SecretRef.Optional)})
				}
			}
		}
	}
	return refs
}

// checkSecretRefs: every Secret and key the workloads need (optional ones aside) is in the
// example set `secrets`, and the example holds no Secret nobody references.
func (p *policy) checkSecretRefs(file string, secrets []object) []string {
	keys := map[string]map[string]bool{}
	for _, o := range secrets {
		secret, ok := o.body.(*corev1.Secret)
		if !ok {
			continue
		}
		keys[secret.Name] = map[string]bool{}
		for key := range secret.Data {
			keys[secret.Name][key] = true
		}
		for key := range secret.StringData {
			keys[secret.Name][key] = true
		}
	}
	var problems []string
	used := map[string]bool{}
	for _, ref := range p.secretRefs() {
		used[ref.secret] = true
		held, ok := keys[ref.secret]
		switch {
		case ref.optional:
		case !ok:
			problems = append(problems, fmt.Sprintf("%s: needs Secret %q, which %s lacks", ref.workload, ref.secret, file))
		case ref.key != "" && !held[ref.key]:
			problems = append(problems, fmt.Sprintf("%s: needs key %q of Secret %q, which %s lacks",
				ref.workload, ref.key, ref.secret, file))
		}
	}
	names := make([]string, 0, len(keys))
	for name := range keys {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if !used[name] {
			problems = append(problems, fmt.Sprintf("%s: Secret %q is referenced by no workload", file, name))
		}
	}
	return problems
}

func isTrue(v *bool) bool { return v != nil && *v }
