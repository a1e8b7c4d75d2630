package training

import (
	"fmt"

	"github.com/jetserve/jetserve/pkg/serve"
)

// WorkflowRetrain is the retraining pipeline's name.
const WorkflowRetrain = "retrain"

// RetrainInput is the retrain workflow's input: the train method's
// arguments and the held-out accuracy a model needs to be promoted.
type RetrainInput struct {
	NumEpochs  int     `json:"num_epochs"`
	Dataset    string  `json:"dataset,omitempty"`
	MinHeldout float64 `json:"min_heldout"`
}

// RetrainResult is the pipeline's answer.
type RetrainResult struct {
	Decision        string  `json:"decision"` // promoted or rejected
	HeldoutAccuracy float64 `json:"heldout_accuracy"`
	TrainingJob     string  `json:"training_job"`
	Version         string  `json:"version,omitempty"`
}

// Retrain is a long pipeline over the train async method: it checks its
// input (a step), submits a training job and awaits it — suspended, with
// no slot held, for as long as the training runs — then promotes the
// model or rejects it by its held-out accuracy (a step each). A crash
// anywhere resumes it without training twice: the job's id is the run
// id and the submit's position.
func Retrain() *serve.WorkflowDef {
	return serve.NewWorkflow(WorkflowRetrain, func(wf serve.Workflow, in RetrainInput) (RetrainResult, error) {
		if in.NumEpochs <= 0 {
			return RetrainResult{}, serve.Errorf(400, "num_epochs must be positive, got %d", in.NumEpochs)
		}
		if in.MinHeldout == 0 {
			in.MinHeldout = 0.8
		}
		var dataset string
		if err := wf.Step("prepare", func(serve.StepContext) (any, error) {
			if in.Dataset == "" {
				return "synthetic", nil
			}
			return in.Dataset, nil
		}).Decode(&dataset); err != nil {
			return RetrainResult{}, err
		}
		args := map[string]any{"num_epochs": in.NumEpochs}
		if in.Dataset != "" {
			args["dataset"] = in.Dataset
		}
		job := wf.Submit(MethodTrain, args)
		var res Result
		if err := job.Get(&res); err != nil {
			return RetrainResult{}, fmt.Errorf("training: %w", err)
		}
		out := RetrainResult{HeldoutAccuracy: res.HeldoutAccuracy, TrainingJob: wf.RunID() + "-1", Decision: "rejected"}
		if res.HeldoutAccuracy < in.MinHeldout {
			return out, wf.Step("reject", func(s serve.StepContext) (any, error) {
				return fmt.Sprintf("model %s kept out: held-out %.3f < %.3f", s.IdempotencyKey(), res.HeldoutAccuracy, in.MinHeldout), nil
			}).Err()
		}
		if err := wf.Step("promote", func(s serve.StepContext) (any, error) {
			return "v-" + s.IdempotencyKey(), nil
		}).Decode(&out.Version); err != nil {
			return RetrainResult{}, err
		}
		out.Decision = "promoted"
		return out, nil
	})
}
