package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// kinds are the only apiVersion/kind pairs a baldur-audit manifest may hold, each with the Go
// type the API server (or the prometheus-operator's CRD) decodes it into. Anything else is
// refused: a typo in apiVersion or kind would otherwise pass unchecked.
var kinds = map[string]func() any{
	"v1/ConfigMap":                            func() any { return &corev1.ConfigMap{} },
	"v1/Secret":                               func() any { return &corev1.Secret{} },
	"v1/Service":                              func() any { return &corev1.Service{} },
	"v1/ServiceAccount":                       func() any { return &corev1.ServiceAccount{} },
	"apps/v1/Deployment":                      func() any { return &appsv1.Deployment{} },
	"batch/v1/CronJob":                        func() any { return &batchv1.CronJob{} },
	"batch/v1/Job":                            func() any { return &batchv1.Job{} },
	"networking.k8s.io/v1/NetworkPolicy":      func() any { return &networkingv1.NetworkPolicy{} },
	"policy/v1/PodDisruptionBudget":           func() any { return &policyv1.PodDisruptionBudget{} },
	"monitoring.coreos.com/v1/ServiceMonitor": func() any { return &monitoringv1.ServiceMonitor{} },
	"monitoring.coreos.com/v1/PrometheusRule": func() any { return &monitoringv1.PrometheusRule{} },
}

// object is one decoded document of the stream.
type object struct {
	ref  string // Kind/name, as problems name it
	kind string
	name string
	body any // a pointer to the typed object
}

type typeMeta struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
}

// decodeStream splits a multi-document YAML stream and decodes each document strictly into its
// type. It returns the objects that decoded and one problem per unknown kind, unknown field,
// duplicate field or wrongly typed value; an error only when the stream is not YAML at all.
func decodeStream(stream []byte) ([]object, []string, error) {
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(stream)))
	var objects []object
	var problems []string
	for index := 1; ; index++ {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, nil, fmt.Errorf("%w: document %d: %v", errUnreadable, index, err)
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		// Duplicate keys are an error here (YAML would silently keep the last one).
		data, err := yaml.YAMLToJSONStrict(doc)
		if err != nil {
			problems = append(problems, fmt.Sprintf("document %d: %v", index, err))
			continue
		}
		var meta typeMeta
		if err := kjson.UnmarshalCaseSensitivePreserveInts(data, &meta); err != nil {
			problems = append(problems, fmt.Sprintf("document %d: not a Kubernetes object: %v", index, err))
			continue
		}
		ref := fmt.Sprintf("%s/%s", meta.Kind, meta.Metadata.Name)
		if meta.Metadata.Name == "" {
			problems = append(problems, fmt.Sprintf("document %d (%s): metadata.name is missing", index, meta.Kind))
		}
		newObject, known := kinds[meta.APIVersion+"/"+meta.Kind]
		if !known {
			problems = append(problems, fmt.Sprintf("%s: unknown kind %q of apiVersion %q (known: %s)",
				ref, meta.Kind, meta.APIVersion, knownKinds()))
			continue
		}
		body := newObject()
		strict, err := kjson.UnmarshalStrict(data, body)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", ref, err))
			continue
		}
		for _, fieldErr := range strict {
			problems = append(problems, fmt.Sprintf("%s: %v", ref, fieldErr))
		}
		// Kept even with unknown fields (they were ignored), so the policy is checked as well.
		objects = append(objects, object{ref: ref, kind: meta.Kind, name: meta.Metadata.Name, body: body})
	}
	return objects, problems, nil
}

func knownKinds() string {
	names := make([]string, 0, len(kinds))
	for name := range kinds {
		names = append(names, name)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

func stripComments(doc []byte) []byte {
	var out bytes.Buffer
	for _, line := range bytes.Split(doc, []byte("\n")) {
		if trimmed := bytes.TrimSpace(line); len(trimmed) > 0 && trimmed[0] != '#' {
			out.Write(line)
			out.WriteByte('\n')
		}
	}
	return out.Bytes()
}
