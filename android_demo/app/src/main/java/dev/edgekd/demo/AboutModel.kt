package dev.edgekd.demo

import android.content.Context
import androidx.compose.foundation.layout.Column
import androidx.compose.foundation.rememberScrollState
import androidx.compose.foundation.verticalScroll
import androidx.compose.material3.AlertDialog
import androidx.compose.material3.MaterialTheme
import androidx.compose.material3.Text
import androidx.compose.material3.TextButton
import androidx.compose.runtime.Composable
import androidx.compose.ui.Modifier
import dev.edgekd.core.ModelCardSummary
import dev.edgekd.core.ModelRejectedException

private const val MODEL_CARD_JSON = "model_card.json"

/**
 * The "About this model" text from the model card `edgekd android install` put into the assets
 * (parsed by the pure-Java core: [ModelCardSummary]); a sentence saying why when there is none.
 */
fun aboutModelText(context: Context, modelSha256: String?): String {
    val present = context.assets.list("")?.toSet() ?: emptySet()
    if (MODEL_CARD_JSON !in present) {
        return "No model card installed. On a computer, run `edgekd android install RUN_DIR` " +
            "(it copies RUN_DIR's model card with the model) and rebuild the app."
    }
    return try {
        val json = context.assets.open(MODEL_CARD_JSON).bufferedReader(Charsets.UTF_8).use { it.readText() }
        ModelCardSummary.parse(json, modelSha256).text()
    } catch (e: ModelRejectedException) {
        e.message ?: "The model card could not be read."
    }
}

/** A scrollable dialog with the model card's summary: data and licence, accuracy per class, limitations. */
@Composable
fun AboutModelDialog(text: String, onDismiss: () -> Unit) {
    AlertDialog(
        onDismissRequest = onDismiss,
        confirmButton = { TextButton(onClick = onDismiss) { Text("Close") } },
        title = { Text("About this model") },
        text = {
            Column(modifier = Modifier.verticalScroll(rememberScrollState())) {
                Text(text, style = MaterialTheme.typography.bodySmall)
            }
        },
    )
}
