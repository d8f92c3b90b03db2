package api

import (
	"fmt"
	"strings"

	"go.yaml.in/yaml/v3"
)

type openAPIOp struct{ public, hasID bool }

// parseOpenAPI returns the operations of an OpenAPI 3 document keyed
// "method path": whether each needs no token (security: []) and whether
// it declares the project id parameter.
func parseOpenAPI(raw []byte) (map[string]openAPIOp, error) {
	var doc struct {
		OpenAPI  string                    `yaml:"openapi"`
		Security []map[string][]string     `yaml:"security"`
		Paths    map[string]map[string]any `yaml:"paths"`
	}
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return nil, err
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.0") {
		return nil, fmt.Errorf("openapi version %q, want 3.0.x", doc.OpenAPI)
	}
	if len(doc.Security) == 0 {
		return nil, fmt.Errorf("no global security requirement")
	}
	ops := map[string]openAPIOp{}
	for path, item := range doc.Paths {
		pathID := declaresID(item["parameters"])
		for method, v := range item {
			switch method {
			case "get", "put", "post", "delete", "patch", "head", "options":
			default:
				continue
			}
			op, ok := v.(map[string]any)
			if !ok {
				return nil, fmt.Errorf("%s %s is not an object", method, path)
			}
			if _, ok := op["responses"]; !ok {
				return nil, fmt.Errorf("%s %s has no responses", method, path)
			}
			sec, hasSec := op["security"].([]any)
			ops[method+" "+path] = openAPIOp{
				public: hasSec && len(sec) == 0,
				hasID:  pathID || declaresID(op["parameters"]),
			}
		}
	}
	return ops, nil
}

func declaresID(params any) bool {
	list, _ := params.([]any)
	for _, p := range list {
		m, _ := p.(map[string]any)
		if m["$ref"] == "#/components/parameters/ProjectID" || (m["name"] == "id" && m["in"] == "path") {
			return true
		}
	}
	return false
}
