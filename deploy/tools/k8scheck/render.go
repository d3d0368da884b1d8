package main

import (
	"fmt"

	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// render builds the kustomization in dir with kustomize's own library (krusty), the code behind
// `kubectl kustomize` and `kustomize build`: the same options (legacy resource order, files
// only from inside the kustomization root, no plugins), so the suite needs Go and no kubectl.
func render(dir string) ([]byte, error) {
	options := krusty.MakeDefaultOptions()
	options.Reorder = krusty.ReorderOptionLegacy
	resources, err := krusty.MakeKustomizer(options).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("%w: kustomize build %s: %v", errUnreadable, dir, err)
	}
	out, err := resources.AsYaml()
	if err != nil {
		return nil, fmt.Errorf("%w: kustomize build %s: %v", errUnreadable, dir, err)
	}
	return out, nil
}
